//! `llama_block`: a Llama decoder layer — `h = x + attn(rms1(x))`, then
//! `h + down(silu(gate(rms2(h))) · up(rms2(h)))` — with rotary position embeddings
//! (`rope_theta`, optional Llama-3 `rope_scaling`), grouped-query attention (`heads` query heads
//! sharing `kv_heads` key/value heads; `kv_heads = heads` is plain multi-head) and no biases,
//! as transformers' `LlamaDecoderLayer` computes it. Inputs `[tokens, dim]`. Its seven linear
//! products are exposed to the weight-gradient strategies.

pub mod rope;

use crate::def::{ACT_BYTES, Kind, LayerCost, LayerDef, Product, dim, epsilon};
use crate::error::ConfigError;
use crate::reader::Section;
pub use rope::RopeScaling;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaBlock {
    pub heads: usize,
    pub kv_heads: usize,
    pub ff: usize,
    /// The two RMS norms' epsilon.
    pub eps: f64,
    pub rope_theta: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
}

impl Kind for LlamaBlock {
    const NAME: &'static str = "llama_block";
    const KEYS: &'static [&'static str] =
        &["heads", "kv_heads", "ff", "eps", "rope_theta", "rope_scaling"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        let heads = dim(s, "heads", "8")?;
        let kv_heads = match s.opt_u64("kv_heads")? {
            None => heads,
            Some(v) => s.positive("kv_heads", v, "Use kv_heads = heads for multi-head attention.")?,
        };
        if heads % kv_heads != 0 {
            return Err(s.err(
                "kv_heads",
                format!("{kv_heads} does not divide heads = {heads}"),
                "Query heads are shared out in equal groups: use a divisor of heads.",
            ));
        }
        let rope_theta = s.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        if !(rope_theta > 1.0 && rope_theta.is_finite()) {
            return Err(s.err("rope_theta", format!("must be above 1, found {rope_theta}"), "Llama uses 10000 or 500000."));
        }
        let rope_scaling = match s.opt_table("rope_scaling")? {
            None => None,
            Some(t) => Some(RopeScaling::parse(&Section::new(
                s.file,
                s.key("rope_scaling"),
                t,
                RopeScaling::KEYS,
            )?)?),
        };
        Ok(LlamaBlock {
            heads,
            kv_heads,
            ff: dim(s, "ff", "1024")?,
            eps: epsilon(s, "eps", 1e-5)?,
            rope_theta,
            rope_scaling,
        })
    }
}

impl LlamaBlock {
    /// Width of the key and value projections for model width `d`.
    pub fn kv_dim(&self, d: usize) -> usize {
        d / self.heads * self.kv_heads
    }
}

impl LayerDef for LlamaBlock {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[_, d] = input else {
            return Err(format!(
                "llama_block takes [tokens, model_dim], got {input:?}; put an embedding before it"
            ));
        };
        if d % self.heads != 0 || !(d / self.heads).is_multiple_of(2) {
            return Err(format!(
                "llama_block: model_dim {d} must split into heads = {} of an even head size (rotary embeddings rotate pairs)",
                self.heads
            ));
        }
        Ok(input.to_vec())
    }

    fn cost(&self, input: &[usize], _: &[usize]) -> LayerCost {
        let (t, d) = (input[0] as u64, input[1] as u64);
        let (kv, ff) = (self.kv_dim(input[1]) as u64, self.ff as u64);
        let proj = 2 * t * d * (2 * d + 2 * kv);
        let attn = 2 * 2 * t * t * d;
        let mlp = 2 * 3 * t * d * ff;
        LayerCost {
            params: d * (2 * d + 2 * kv) + 3 * d * ff + 2 * d,
            forward_flops: (proj + attn + mlp) as f64 + 30.0 * (t * d) as f64,
            activation_bytes: t * d * ACT_BYTES,
            // q, k, v (rotated and not), probabilities, gate/up/product, norms and residuals.
            saved_bytes: ACT_BYTES.saturating_mul(
                (6 * t * d + 4 * t * kv)
                    .saturating_add((self.heads as u64).saturating_mul(t * t))
                    .saturating_add(3 * t * ff),
            ),
        }
    }

    fn products(&self, input: &[usize]) -> Vec<Product> {
        let (t, d) = (input[0] as u64, input[1] as u64);
        let (kv, ff) = (self.kv_dim(input[1]) as u64, self.ff as u64);
        let p = |name, d_in, d_out| Product::on_tokens(name, t, d_in, d_out);
        vec![
            p("q_proj", d, d),
            p("k_proj", d, kv),
            p("v_proj", d, kv),
            p("o_proj", d, d),
            p("gate_proj", d, ff),
            p("up_proj", d, ff),
            p("down_proj", ff, d),
        ]
    }
}

#[cfg(feature = "burn")]
mod burn_half;

#[cfg(test)]
mod tests {
    use super::*;

    fn block(heads: usize, kv_heads: usize) -> LlamaBlock {
        LlamaBlock {
            heads,
            kv_heads,
            ff: 64,
            eps: 1e-5,
            rope_theta: 1e4,
            rope_scaling: None,
        }
    }

    #[test]
    fn checks_heads_and_rotary_pairs() {
        assert!(block(3, 3).output_shape(&[16, 32]).unwrap_err().contains("heads = 3"));
        // 32 / 32 = head size 1: odd, nothing to rotate with.
        assert!(block(32, 32).output_shape(&[16, 32]).unwrap_err().contains("even"));
        assert_eq!(block(4, 2).output_shape(&[16, 32]).unwrap(), vec![16, 32]);
    }

    #[test]
    fn grouped_keys_and_values_are_narrower() {
        let b = block(4, 1);
        let ps = b.products(&[16, 32]);
        assert_eq!(ps[1].d_out, 8);
        assert_eq!(ps[2].d_out, 8);
        let params = 32 * 32 * 2 + 32 * 8 * 2 + 3 * 32 * 64 + 2 * 32;
        assert_eq!(b.cost(&[16, 32], &[16, 32]).params, params);
    }
}
