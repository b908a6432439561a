//! `layer_norm`: normalises the last dimension to zero mean and unit variance, then scales and
//! shifts it (`eps = 1e-5`); unit scale and zero shift at the start.

use crate::def::{Kind, LayerCost, LayerDef, act_bytes, elements, epsilon, same_shape};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerNorm {
    pub eps: f64,
}

impl Kind for LayerNorm {
    const NAME: &'static str = "layer_norm";
    const KEYS: &'static [&'static str] = &["eps"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(LayerNorm {
            eps: epsilon(s, "eps", 1e-5)?,
        })
    }
}

impl LayerDef for LayerNorm {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        same_shape(input, "layer_norm")
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        LayerCost {
            params: 2 * *input.last().unwrap() as u64,
            forward_flops: 8.0 * elements(output) as f64,
            activation_bytes: act_bytes(output),
            saved_bytes: act_bytes(output),
        }
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::LayerNorm;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, layer_norm};
    use crate::map_float;
    use burn::nn;
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for LayerNorm {
        type Module = nn::LayerNorm;

        fn init(&self, input: &[usize], _: &mut ChaCha8Rng, device: &Device) -> nn::LayerNorm {
            layer_norm(*input.last().unwrap(), self.eps, device)
        }

        fn forward(&self, m: &nn::LayerNorm, x: Act, _: &mut Forward) -> Act {
            map_float!(x, |t| m.forward(t))
        }
    }
}
