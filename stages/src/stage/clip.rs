//! Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_ computes it:
//! each parameter's gradient norm, the norm of those norms over the whole model, and every
//! gradient scaled by `min(1, max_norm / (norm + 1e-6))`.

use super::Stage;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

impl Stage {
    /// Settles this step's gradients (batched weight products, a replica reduction) and
    /// returns, per layer, the sum of the squares of its parameters' gradient norms. The global
    /// norm adds these in layer order ([`global_norm`]), so a split model sums exactly as the
    /// whole one does.
    pub fn layer_grad_norms_squared(&mut self) -> Vec<f64> {
        self.flush_batched_weights();
        let grads = match self.reduced.take() {
            Some(g) => g,
            None => self.accum.grads(),
        };
        // A tied head's weight is the embedding's: counted there, once.
        let tied_head = self.tie.map(|t| t.head);
        let sums = self
            .layers
            .clone()
            .zip(&self.modules)
            .map(|(layer, m)| {
                if Some(layer) == tied_head {
                    return 0.0;
                }
                let mut v = Norms {
                    grads: &grads,
                    sum: 0.0,
                };
                m.visit(&mut v);
                v.sum
            })
            .collect();
        self.reduced = Some(grads);
        sums
    }

    /// The sum over this stage's layers of [`Stage::layer_grad_norms_squared`] (a model on one
    /// stage: its squared global norm).
    pub fn grad_norm_squared(&mut self) -> f64 {
        global_norm(&self.layer_grad_norms_squared()).powi(2)
    }

    /// Scales the settled gradients by `coef` (after [`Stage::layer_grad_norms_squared`]).
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

/// The global norm from every layer's squared gradient norms, in layer order.
pub fn global_norm(layer_squares: &[f64]) -> f64 {
    layer_squares.iter().sum::<f64>().sqrt()
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
            // Summed in an order fixed by the shape: the same norm on any thread count.
            let n = crate::sum::ordered_sum(g.square())
                .sqrt()
                .into_scalar::<f32>();
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
