//! Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_ computes it:
//! each parameter's gradient norm, the norm of those norms over the whole model, and every
//! gradient scaled by `min(1, max_norm / (norm + 1e-6))`.

use super::Stage;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

impl Stage {
    /// Settles this step's gradients (batched weight products, a replica reduction) and
    /// returns the sum of the squares of its parameters' gradient norms.
    pub fn grad_norm_squared(&mut self) -> f64 {
        self.flush_batched_weights();
        let grads = match self.reduced.take() {
            Some(g) => g,
            None => self.accum.grads(),
        };
        let mut v = Norms {
            grads: &grads,
            sum: 0.0,
        };
        for m in &self.modules {
            m.visit(&mut v);
        }
        let sum = v.sum;
        self.reduced = Some(grads);
        sum
    }

    /// Scales the settled gradients by `coef` (after [`Stage::grad_norm_squared`]).
    pub fn scale_grads(&mut self, coef: f32) {
        let Some(grads) = self.reduced.take() else {
            return;
        };
        let mut s = Scale { grads, coef };
        for m in &self.modules {
            m.visit(&mut s);
        }
        self.reduced = Some(s.grads);
    }
}

/// torch's clip coefficient for a global `norm` under `max_norm`, at most 1.
pub fn clip_coef(norm: f64, max_norm: f64) -> f32 {
    ((max_norm as f32) / (norm as f32 + 1e-6)).min(1.0)
}

struct Norms<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for Norms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            // Per tensor in f32, as torch's vector_norm of each gradient.
            let n = g.square().sum().sqrt().into_scalar::<f32>();
            self.sum += (n as f64) * (n as f64);
        }
    }
}

struct Scale {
    grads: GradientsParams,
    coef: f32,
}

impl ModuleVisitor for Scale {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.coef));
        }
    }
}
