//! `concat` (a merge): its `inputs` joined along sample dimension `dim` (0-based, batch
//! excluded; default the last).

use crate::def::{Kind, LayerCost, LayerDef, count_or, elementwise};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concat {
    pub dim: usize,
    /// Whether `dim` was written (else it is settled to the inputs' last dimension).
    #[serde(skip)]
    pub written: bool,
}

impl Kind for Concat {
    const NAME: &'static str = "concat";
    const KEYS: &'static [&'static str] = &["dim"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(Concat {
            dim: count_or(s, "dim", 0)?,
            written: s.get("dim").is_some(),
        })
    }
}

impl LayerDef for Concat {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input.to_vec())
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        elementwise(output, 0.0, 0)
    }

    fn is_merge(&self) -> bool {
        true
    }

    fn settle(&mut self, inputs: &[Vec<usize>]) {
        if !self.written {
            self.dim = inputs.first().map_or(0, |s| s.len().saturating_sub(1));
        }
    }

    fn merge_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        let first = inputs.first().ok_or("a merge needs inputs")?;
        let dim = self.dim;
        if dim >= first.len() {
            return Err(format!(
                "concat along dim {dim}, but its inputs have {} dimensions ({first:?}); dims count from 0, batch excluded",
                first.len()
            ));
        }
        let mut out = first.clone();
        out[dim] = 0;
        for s in inputs {
            let same_rest = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(d, (a, b))| d == dim || a == b);
            if !same_rest {
                return Err(format!(
                    "concat along dim {dim} needs inputs that differ only in that dimension, got {first:?} and {s:?}"
                ));
            }
            out[dim] += s[dim];
        }
        Ok(out)
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Concat;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl, NoParams};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Concat {
        type Module = NoParams;

        fn init(&self, _: &[usize], _: &mut ChaCha8Rng, _: &Device) -> NoParams {
            NoParams::default()
        }

        fn forward(&self, _: &NoParams, _: Act, _: &mut Forward) -> Act {
            panic!("merge layers run through LayerKind::merge")
        }

        fn merge(&self, inputs: Vec<Act>) -> Act {
            // `dim` counts sample dimensions; the batch comes first.
            Act::cat(inputs, self.dim + 1)
        }
    }
}
