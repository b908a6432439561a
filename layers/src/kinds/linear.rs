//! `linear`: `y = x·W + b` over the last dimension (`out`, `bias = true`).

use crate::def::{Kind, LayerCost, LayerDef, Product, act_bytes, dim, elements};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linear {
    pub out: usize,
    pub bias: bool,
}

impl Kind for Linear {
    const NAME: &'static str = "linear";
    const KEYS: &'static [&'static str] = &["out", "bias"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(Linear {
            out: dim(s, "out", "128")?,
            bias: s.opt_bool("bias")?.unwrap_or(true),
        })
    }
}

impl LayerDef for Linear {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let Some((_, rest)) = input.split_last() else {
            return Err("linear needs an input with at least one dimension".into());
        };
        Ok(rest.iter().copied().chain([self.out]).collect())
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        let d_in = *input.last().unwrap() as u64;
        let out = self.out as u64;
        LayerCost {
            params: d_in * out + if self.bias { out } else { 0 },
            forward_flops: 2.0 * (elements(input) / d_in.max(1) * d_in * out) as f64,
            activation_bytes: act_bytes(output),
            saved_bytes: act_bytes(output),
        }
    }

    fn products(&self, input: &[usize]) -> Vec<Product> {
        let d_in = *input.last().unwrap() as u64;
        vec![Product {
            name: "linear",
            rows: elements(input) / d_in.max(1),
            d_in,
            d_out: self.out as u64,
            sequence: input.len() > 1,
        }]
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Linear;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, linear};
    use burn::nn;
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Linear {
        type Module = nn::Linear;

        fn init(&self, input: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> nn::Linear {
            linear(rng, *input.last().unwrap(), self.out, self.bias, device)
        }

        fn forward(&self, m: &nn::Linear, x: Act, f: &mut Forward) -> Act {
            f.linear("linear", m, x)
        }

        fn linear<'m>(m: &'m nn::Linear, name: &str) -> Option<&'m nn::Linear> {
            (name == "linear").then_some(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_counts_weights_and_bias() {
        let l = Linear {
            out: 10,
            bias: true,
        };
        let c = l.cost(&[64], &[10]);
        assert_eq!(c.params, 650);
        assert_eq!(c.forward_flops, 1280.0);
        assert_eq!(c.activation_bytes, 40);
        assert_eq!(l.output_shape(&[7, 64]).unwrap(), vec![7, 10]);
        assert_eq!(l.products(&[7, 64])[0].rows, 7);
    }
}
