//! `transformer_block`: pre-norm causal multi-head self-attention and a GELU MLP, each wrapped
//! in a residual: `h = x + attn(ln1(x))`, then `h + mlp(ln2(h))` (`heads`, `ff`; inputs
//! `[tokens, dim]`). Its six linear products (query, key, value, out, up, down) are exposed to
//! the weight-gradient strategies, like a top-level `linear`.

use crate::def::{ACT_BYTES, Kind, LayerCost, LayerDef, Product, dim};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformerBlock {
    pub heads: usize,
    pub ff: usize,
}

impl Kind for TransformerBlock {
    const NAME: &'static str = "transformer_block";
    const KEYS: &'static [&'static str] = &["heads", "ff"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(TransformerBlock {
            heads: dim(s, "heads", "4")?,
            ff: dim(s, "ff", "256")?,
        })
    }
}

impl LayerDef for TransformerBlock {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[_, d] = input else {
            return Err(format!(
                "transformer_block takes [tokens, model_dim], got {input:?}; put an embedding before it"
            ));
        };
        if d % self.heads != 0 {
            return Err(format!(
                "transformer_block: model_dim {d} is not divisible by heads = {}",
                self.heads
            ));
        }
        Ok(input.to_vec())
    }

    fn cost(&self, input: &[usize], _: &[usize]) -> LayerCost {
        let (t, d) = (input[0] as u64, input[1] as u64);
        let ff = self.ff as u64;
        let proj = 2 * t * d * (4 * d); // q, k, v and output projections
        let attn = 2 * 2 * t * t * d; // scores and weighted sum
        let mlp = 2 * 2 * t * d * ff;
        LayerCost {
            params: 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d,
            forward_flops: (proj + attn + mlp) as f64 + 30.0 * (t * d) as f64,
            activation_bytes: t * d * ACT_BYTES,
            // q, k, v, attention probabilities, MLP hidden, norms and residuals.
            saved_bytes: ACT_BYTES.saturating_mul(
                8 * t * d
                    + (self.heads as u64)
                        .saturating_mul(t * t)
                        .saturating_add(2 * t * ff),
            ),
        }
    }

    fn products(&self, input: &[usize]) -> Vec<Product> {
        let (t, d, ff) = (input[0] as u64, input[1] as u64, self.ff as u64);
        let p = |name, d_in, d_out| Product::on_tokens(name, t, d_in, d_out);
        vec![
            p("query", d, d),
            p("key", d, d),
            p("value", d, d),
            p("out", d, d),
            p("up", d, ff),
            p("down", ff, d),
        ]
    }
}

#[cfg(feature = "burn")]
mod burn_half;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_heads() {
        let t = TransformerBlock { heads: 3, ff: 64 };
        assert!(t.output_shape(&[16, 32]).unwrap_err().contains("divisible"));
    }

    #[test]
    fn products_cover_the_projections() {
        let t = TransformerBlock { heads: 4, ff: 64 };
        let flops: f64 = t.products(&[16, 32]).iter().map(Product::flops).sum();
        assert_eq!(flops, (2 * 16 * 32 * 4 * 32 + 2 * 2 * 16 * 32 * 64) as f64);
    }
}
