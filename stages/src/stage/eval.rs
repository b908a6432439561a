//! Evaluation: a micro-batch forward with no graph, no dropout and no state kept.

use super::{Mode, Stage, StageError};
use crate::act::Act;

impl Stage {
    /// Runs a validation micro-batch forward (dropout off, nothing recorded or kept). Its
    /// batch dimension may be smaller than training's (the last validation micro-batch).
    pub fn evaluate(&self, mb: u64, input: Act) -> Result<Act, StageError> {
        Ok(self.evaluate_many(mb, vec![input])?.swap_remove(0))
    }

    /// [`Stage::evaluate`] from every tensor the stage receives; returns the tensors it sends.
    pub fn evaluate_many(&self, mb: u64, inputs: Vec<Act>) -> Result<Vec<Act>, StageError> {
        for (input, expected) in inputs.iter().zip(&self.input_shapes) {
            let dims = input.dims();
            if dims.len() != expected.len() || dims[1..] != expected[1..] {
                return Err(StageError::InputShape {
                    stage: self.index,
                    mb,
                    expected: expected.clone(),
                    got: dims,
                });
            }
        }
        let x = inputs
            .into_iter()
            .map(|a| a.autodiff().detach().cast(self.dtype))
            .collect();
        Ok(self.apply(mb, x, Mode::Eval).0)
    }
}
