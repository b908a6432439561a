//! `clip_grad_norm` on the executor: before the step's first optimizer update (every chunk's
//! gradients are final then: all-reduces come first, `with_all_reduce`), the global norm and
//! every held chunk's gradients scaled by the same coefficient.
//!
//! The norm adds each layer's squared gradient norm in layer order. A model on one rank adds
//! its own; otherwise every rank of replica 0 puts its layers' sums in their slots of a vector
//! with one slot per layer of the model, zeros elsewhere, and a ring all-reduce over every rank
//! sums the vectors. Each f64 travels as its four 16-bit pieces in f32s, and adding zeros to
//! them is exact, so every rank and the one-rank reference compute the same norm to the bit.
//! Other replicas send zeros: after their all-reduce they hold replica 0's gradients.

use super::{Action, ExecError, Executor, Reducing};
use brigade_stages::stage::{clip_coef, global_norm};

/// The ring over every rank that sums the squared gradient norms when the model spans
/// several ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormRing {
    /// Every rank of the job, in rank order; this rank is member `me`.
    pub ranks: Vec<usize>,
    pub me: usize,
    /// Layers in the model: one slot each.
    pub layers: usize,
    /// Whether this rank's layers count (replica 0).
    pub counts: bool,
    /// The id its segments travel under: one past the last chunk (a chunk's ring uses the
    /// chunk's id).
    pub id: usize,
}

/// f32s per slot: an f64's four 16-bit pieces.
const SLOT: usize = 4;

fn encode(v: f64, slot: &mut [f32]) {
    let bits = v.to_bits();
    for (i, s) in slot.iter_mut().enumerate() {
        *s = ((bits >> (16 * i)) & 0xffff) as f32;
    }
}

fn decode(slot: &[f32]) -> f64 {
    let bits = slot
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &s)| acc | ((s as u64 & 0xffff) << (16 * i)));
    f64::from_bits(bits)
}

impl Executor {
    /// Clips this step's gradients once, at its first optimizer update; returns the norm's
    /// all-reduce when the model spans several ranks (the update runs again once it is done).
    pub(super) fn clip_once(&mut self) -> Result<Option<Action>, ExecError> {
        if self.grad_norm.is_some() {
            return Ok(None);
        }
        let Some(max_norm) = self.stages.values().find_map(|s| s.clip_grad_norm()) else {
            return Ok(None);
        };
        let mut ids: Vec<usize> = self.stages.keys().copied().collect();
        ids.sort_unstable();
        let mut squares = Vec::new();
        for c in &ids {
            let stage = self.stages.get_mut(c).expect("a held chunk");
            let first = stage.layers().start;
            let sums = stage.layer_grad_norms_squared();
            squares.extend(sums.into_iter().enumerate().map(|(j, v)| (first + j, v)));
        }
        let Some(ring) = &self.norm else {
            let v: Vec<f64> = squares.into_iter().map(|(_, v)| v).collect();
            self.apply_clip(global_norm(&v), max_norm);
            return Ok(None);
        };
        let mut data = vec![0.0; SLOT * ring.layers];
        if ring.counts {
            for (l, v) in squares {
                encode(v, &mut data[SLOT * l..SLOT * (l + 1)]);
            }
        }
        self.reducing = Some(Reducing::Norm {
            max_norm,
            start: self.tracer.now(),
        });
        Ok(Some(Action::AllReduce {
            chunk: ring.id,
            ring: ring.ranks.clone(),
            me: ring.me,
            data,
        }))
    }

    /// The norm's all-reduce is done: `data` holds every layer's squared norm.
    pub(super) fn norm_reduced(&mut self, data: &[f32], max_norm: f64) {
        let squares: Vec<f64> = data.chunks(SLOT).map(decode).collect();
        self.apply_clip(global_norm(&squares), max_norm);
    }

    fn apply_clip(&mut self, norm: f64, max_norm: f64) {
        let coef = clip_coef(norm, max_norm);
        for stage in self.stages.values_mut() {
            stage.scale_grads(coef);
        }
        self.grad_norm = Some(norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_carries_an_f64_exactly_and_zeros_add_nothing() {
        for v in [0.0, 1.0, 1e-300, 3.0e5 + 1e-9, f64::MAX, 0.1 + 0.2] {
            let mut slot = [0.0f32; SLOT];
            encode(v, &mut slot);
            let summed: Vec<f32> = slot.iter().map(|s| s + 0.0 + 0.0).collect();
            assert_eq!(decode(&summed).to_bits(), v.to_bits(), "{v}");
        }
    }
}
