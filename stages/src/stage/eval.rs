//! Evaluation: a micro-batch forward with no graph, no dropout and no state kept.

use super::{Stage, StageError, compute_module};
use crate::act::Act;
use crate::layer::ForwardCtx;
use burn::module::Module;
use burn::tensor::FloatDType;

impl Stage {
    /// Runs a validation micro-batch forward (dropout off, nothing recorded or kept). Its
    /// batch dimension may be smaller than training's (the last validation micro-batch).
    pub fn evaluate(&self, mb: u64, input: Act) -> Result<Act, StageError> {
        let dims = input.dims();
        if dims.len() != self.input_shape.len() || dims[1..] != self.input_shape[1..] {
            return Err(StageError::InputShape {
                stage: self.index,
                mb,
                expected: self.input_shape.clone(),
                got: dims,
            });
        }
        let mut x = input.autodiff().detach().cast(self.dtype);
        for (j, (kind, module)) in self.kinds.iter().zip(&self.modules).enumerate() {
            let mut module = module.valid();
            if self.dtype != FloatDType::F32 {
                module = compute_module(&module, self.dtype);
            }
            let ctx = ForwardCtx {
                seed: self.seed,
                step: self.step,
                microbatch: mb,
                layer: (self.layers.start + j) as u64,
                train: false,
            };
            x = module.forward(kind, x, &ctx);
        }
        Ok(x)
    }
}
