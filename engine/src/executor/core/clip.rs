//! `clip_grad_norm` on the executor: before the step's first optimizer update, the norm over
//! every chunk this rank holds, and every chunk's gradients scaled by the same coefficient.
//! The job validator admits clipping only where one rank holds the whole model, so this norm
//! is the global one.

use super::{ExecError, Executor};
use brigade_stages::stage::clip_coef;

impl Executor {
    /// Clips this step's gradients once, at its first optimizer update.
    pub(super) fn clip_once(&mut self) -> Result<(), ExecError> {
        if self.grad_norm.is_some() {
            return Ok(());
        }
        let Some(max_norm) = self.stages.values().find_map(|s| s.clip_grad_norm()) else {
            return Ok(());
        };
        let mut ids: Vec<usize> = self.stages.keys().copied().collect();
        ids.sort_unstable();
        let squared: f64 = ids
            .iter()
            .map(|c| {
                self.stages
                    .get_mut(c)
                    .expect("a held chunk")
                    .grad_norm_squared()
            })
            .sum();
        let norm = squared.sqrt();
        let coef = clip_coef(norm, max_norm);
        for c in &ids {
            self.stages
                .get_mut(c)
                .expect("a held chunk")
                .scale_grads(coef);
        }
        self.grad_norm = Some(norm);
        Ok(())
    }
}
