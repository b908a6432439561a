//! A stage's gradients as one flat buffer, for data parallelism: every copy of a chunk lays
//! its parameters out in the same order, so the replicas can sum the buffers element by
//! element (engine/src/allreduce.rs) and step their optimizers on the same gradients.

use super::{Stage, StageError};
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Where a parameter's gradient sits in the buffer.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    id: ParamId,
    shape: Vec<usize>,
    device: Device,
}

impl Stage {
    /// Moves this step's accumulated gradients out as one f32 buffer (parameters in module
    /// order); [`Stage::set_gradients`] puts the reduced buffer back for the optimizer step.
    pub fn take_gradients(&mut self) -> Vec<f32> {
        self.flush_batched_weights();
        struct Collect<'a> {
            from: &'a mut GradientsParams,
            slots: Vec<Slot>,
            flat: Vec<f32>,
        }
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.from.remove::<D>(param.id) {
                    self.slots.push(Slot {
                        id: param.id,
                        shape: g.dims().to_vec(),
                        device: g.device(),
                    });
                    let data = g.into_data().convert::<f32>();
                    self.flat.extend(data.iter::<f32>());
                }
            }
        }
        let mut grads = self.accum.grads();
        let mut c = Collect {
            from: &mut grads,
            slots: Vec::new(),
            flat: Vec::new(),
        };
        for m in &self.modules {
            m.visit(&mut c);
        }
        self.reduce_slots = c.slots;
        c.flat
    }

    /// The reduced gradients (the buffer [`Stage::take_gradients`] gave, summed over the
    /// replicas), used by the next optimizer step.
    pub fn set_gradients(&mut self, flat: &[f32]) -> Result<(), StageError> {
        let total: usize = self
            .reduce_slots
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        if flat.len() != total {
            return Err(StageError::Gradients {
                stage: self.index,
                expected: total,
                got: flat.len(),
            });
        }
        let mut grads = GradientsParams::new();
        let mut at = 0;
        for s in std::mem::take(&mut self.reduce_slots) {
            let n: usize = s.shape.iter().product();
            let data = TensorData::new(flat[at..at + n].to_vec(), s.shape.clone());
            at += n;
            match s.shape.len() {
                1 => grads.register::<1>(s.id, Tensor::from_data(data, &s.device)),
                2 => grads.register::<2>(s.id, Tensor::from_data(data, &s.device)),
                3 => grads.register::<3>(s.id, Tensor::from_data(data, &s.device)),
                4 => grads.register::<4>(s.id, Tensor::from_data(data, &s.device)),
                r => unreachable!("parameters have rank 1 to 4, not {r}"),
            }
        }
        self.reduced = Some(grads);
        Ok(())
    }
}
