//! `dropout`: in training, zeroes each element with probability `p` and scales the rest by
//! 1/(1-p); the mask is keyed by (seed, step, micro-batch, layer), so every split draws the same.

use crate::def::{Kind, LayerCost, LayerDef, act_bytes, elementwise};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropout {
    pub p: f64,
}

impl Kind for Dropout {
    const NAME: &'static str = "dropout";
    const KEYS: &'static [&'static str] = &["p"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        let p = s
            .opt_f64("p")?
            .ok_or_else(|| s.err("p", "missing", "Give the drop probability, e.g. `p = 0.1`."))?;
        if !(0.0..1.0).contains(&p) {
            return Err(s.err(
                "p",
                format!("must be in [0, 1), found {p}"),
                "Use a probability such as 0.1.",
            ));
        }
        Ok(Dropout { p })
    }
}

impl LayerDef for Dropout {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input.to_vec())
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        elementwise(output, 2.0, 2 * act_bytes(output))
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Dropout;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, NoParams};
    use crate::init::{Stream, rng, uniform_values};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Dropout {
        type Module = NoParams;

        fn init(&self, _: &[usize], _: &mut ChaCha8Rng, _: &Device) -> NoParams {
            NoParams::default()
        }

        fn forward(&self, _: &NoParams, x: Act, f: &mut Forward) -> Act {
            let (ctx, p) = (&f.ctx, self.p);
            if !ctx.train || p == 0.0 {
                return x;
            }
            let dims = x.dims();
            let mut r = rng(
                Stream::Dropout,
                &[ctx.seed, ctx.step, ctx.microbatch, ctx.layer],
            );
            let keep = 1.0 / (1.0 - p) as f32;
            let mask: Vec<f32> = uniform_values(&mut r, dims.iter().product(), 1.0)
                .into_iter()
                .map(|u| if (u + 1.0) * 0.5 < p as f32 { 0.0 } else { keep })
                .collect();
            let mask = Act::from_f32(mask, &dims, &x.device()).cast(x.float_dtype());
            match (x, mask) {
                (Act::F2(t), Act::F2(m)) => Act::F2(t * m),
                (Act::F3(t), Act::F3(m)) => Act::F3(t * m),
                (Act::F4(t), Act::F4(m)) => Act::F4(t * m),
                (other, _) => panic!("dropout on {:?}", other.dims()),
            }
        }
    }
}
