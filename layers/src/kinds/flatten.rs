//! `flatten`: one sample's dimensions as one (`[c, h, w]` → `[c·h·w]`).

use crate::def::{Kind, LayerCost, LayerDef, elementwise};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flatten;

impl Kind for Flatten {
    const NAME: &'static str = "flatten";

    fn parse(_: &Section) -> Result<Self, ConfigError> {
        Ok(Flatten)
    }
}

impl LayerDef for Flatten {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        if input.is_empty() {
            Err("flatten needs an input with at least one dimension".into())
        } else {
            Ok(vec![input.iter().product()])
        }
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        elementwise(output, 0.0, 0)
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Flatten;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, NoParams};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Flatten {
        type Module = NoParams;

        fn init(&self, _: &[usize], _: &mut ChaCha8Rng, _: &Device) -> NoParams {
            NoParams::default()
        }

        fn forward(&self, _: &NoParams, x: Act, _: &mut Forward) -> Act {
            match x {
                Act::F2(t) => Act::F2(t),
                Act::F3(t) => Act::F2(t.flatten(1, 2)),
                Act::F4(t) => Act::F2(t.flatten(1, 3)),
                other => panic!("flatten on {:?}", other.dims()),
            }
        }
    }
}
