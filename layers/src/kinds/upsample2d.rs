//! `upsample2d`: nearest-neighbour upsampling of `[c, h, w]` by `scale` (default 2) in height
//! and width.

use crate::def::{Kind, LayerCost, LayerDef, chw, dim_or, elementwise};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upsample2d {
    pub scale: usize,
}

impl Kind for Upsample2d {
    const NAME: &'static str = "upsample2d";
    const KEYS: &'static [&'static str] = &["scale"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(Upsample2d {
            scale: dim_or(s, "scale", 2)?,
        })
    }
}

impl LayerDef for Upsample2d {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let [c, h, w] = chw(input, "upsample2d")?;
        let scale = self.scale;
        match (h.checked_mul(scale), w.checked_mul(scale)) {
            (Some(oh), Some(ow)) => Ok(vec![c, oh, ow]),
            _ => Err(format!("upsample2d: {h}×{w} times {scale} is too large")),
        }
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        elementwise(output, 1.0, 0)
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Upsample2d;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, NoParams};
    use burn::prelude::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Upsample2d {
        type Module = NoParams;

        fn init(&self, _: &[usize], _: &mut ChaCha8Rng, _: &Device) -> NoParams {
            NoParams::default()
        }

        fn forward(&self, _: &NoParams, x: Act, _: &mut Forward) -> Act {
            match x {
                Act::F4(t) => {
                    let s = self.scale as f32;
                    let options =
                        InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([s, s]);
                    Act::F4(interpolate(t, options))
                }
                other => panic!("upsample2d on {:?}", other.dims()),
            }
        }
    }
}
