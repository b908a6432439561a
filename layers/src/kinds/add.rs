//! `add` (a merge): the element-wise sum of its `inputs`, all of one shape.

use crate::def::{Kind, LayerCost, LayerDef, elementwise};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Add;

impl Kind for Add {
    const NAME: &'static str = "add";

    fn parse(_: &Section) -> Result<Self, ConfigError> {
        Ok(Add)
    }
}

impl LayerDef for Add {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input.to_vec())
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        elementwise(output, 1.0, 0)
    }

    fn is_merge(&self) -> bool {
        true
    }

    fn merge_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        let first = inputs.first().ok_or("a merge needs inputs")?;
        match inputs.iter().find(|s| *s != first) {
            Some(other) => Err(format!(
                "add needs inputs of one shape, got {first:?} and {other:?}"
            )),
            None => Ok(first.clone()),
        }
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Add;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, NoParams};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Add {
        type Module = NoParams;

        fn init(&self, _: &[usize], _: &mut ChaCha8Rng, _: &Device) -> NoParams {
            NoParams::default()
        }

        fn forward(&self, _: &NoParams, _: Act, _: &mut Forward) -> Act {
            panic!("merge layers run through LayerKind::merge")
        }

        fn merge(&self, inputs: Vec<Act>) -> Act {
            inputs
                .into_iter()
                .reduce(|a, b| a + b)
                .expect("a merge has inputs")
        }
    }
}
