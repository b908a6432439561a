//! `rms_norm`: divides the last dimension by its root mean square, then scales it
//! (`eps = 1e-5`; Llama's norm, no shift); unit scale at the start.

use crate::def::{Kind, LayerCost, LayerDef, act_bytes, elements, epsilon, same_shape};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RmsNorm {
    pub eps: f64,
}

impl Kind for RmsNorm {
    const NAME: &'static str = "rms_norm";
    const KEYS: &'static [&'static str] = &["eps"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(RmsNorm {
            eps: epsilon(s, "eps", 1e-5)?,
        })
    }
}

impl LayerDef for RmsNorm {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        same_shape(input, "rms_norm")
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        LayerCost {
            params: *input.last().unwrap() as u64,
            forward_flops: 5.0 * elements(output) as f64,
            activation_bytes: act_bytes(output),
            saved_bytes: act_bytes(output),
        }
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::RmsNorm;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, rms_norm};
    use crate::map_float;
    use burn::nn;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for RmsNorm {
        type Module = nn::RmsNorm;

        fn init(&self, input: &[usize], _: &mut ChaCha8Rng, device: &burn::prelude::Device) -> nn::RmsNorm {
            rms_norm(*input.last().unwrap(), self.eps, device)
        }

        fn forward(&self, m: &nn::RmsNorm, x: Act, _: &mut Forward) -> Act {
            map_float!(x, |t| crate::fused::apply_rms_norm(m, t))
        }
    }
}
