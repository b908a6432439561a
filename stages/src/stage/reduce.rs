//! A stage's gradients as flat buffers, for data parallelism: every copy of a chunk lays its
//! parameters out in the same order, so the replicas can sum the buffers element by element
//! (engine/src/allreduce.rs) and step their optimizers on the same gradients.
//!
//! The buffers come in buckets of layers, last layer first — the order in which backward
//! makes gradients final — so the replicas sum one bucket while the stage still makes the
//! next one (with batched weight gradients, while it runs the next layers' weight products).

use super::{Stage, StageError};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Where a parameter's gradient sits in a buffer.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    id: ParamId,
    shape: Vec<usize>,
    device: Device,
}

/// Where each gradient of one bucket sits in its buffer, to put the sum back
/// ([`Stage::set_gradient_bucket`]).
#[derive(Debug, Clone)]
pub struct BucketSlots {
    slots: Vec<Slot>,
}

impl BucketSlots {
    /// Values in the bucket's buffer.
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Stage {
    /// Cuts the stage's layers into buckets of at least `bytes` of f32 gradients (the last
    /// one may be smaller), last layer first; local layer indices, each bucket in the order
    /// its buffer lays them out.
    pub fn gradient_buckets(&self, bytes: usize) -> Vec<Vec<usize>> {
        let sizes: Vec<u64> = self
            .modules
            .iter()
            .map(|m| m.num_params() as u64 * 4)
            .collect();
        brigade_partitioner::buckets::cut(&sizes, bytes as u64)
    }

    /// Moves the gradients of local `layers` out as one f32 buffer (layers in the order
    /// given, parameters in module order), first finishing their batched weight products.
    pub fn take_gradient_bucket(&mut self, layers: &[usize]) -> (Vec<f32>, BucketSlots) {
        self.flush_batched_weights_where(|j| layers.contains(&j));
        let mut fresh = self.accum.grads();
        let mut taken = self.taken.take().unwrap_or_default();
        for m in &self.modules {
            m.visit(&mut Merge {
                from: &mut fresh,
                into: &mut taken,
            });
        }
        let mut c = Collect {
            from: &mut taken,
            slots: Vec::new(),
            flat: Vec::new(),
        };
        for &j in layers {
            self.modules[j].visit(&mut c);
        }
        let (flat, slots) = (c.flat, BucketSlots { slots: c.slots });
        self.taken = Some(taken);
        (flat, slots)
    }

    /// Puts one bucket's reduced buffer back for the next optimizer step: the buffer as
    /// `pieces` in order (an all-reduce's segments, never gathered into one buffer).
    pub fn set_gradient_bucket(
        &mut self,
        slots: BucketSlots,
        pieces: &[&[f32]],
    ) -> Result<(), StageError> {
        let got = pieces.iter().map(|p| p.len()).sum();
        if got != slots.len() {
            return Err(StageError::Gradients {
                stage: self.index,
                expected: slots.len(),
                got,
            });
        }
        let mut grads = self.reduced.take().unwrap_or_default();
        let mut values = Cursor { pieces, at: (0, 0) };
        for s in slots.slots {
            let n: usize = s.shape.iter().product();
            let data = TensorData::new(values.take(n), s.shape.clone());
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

    /// Moves this step's accumulated gradients out as one f32 buffer (parameters in module
    /// order); [`Stage::set_gradients`] puts the reduced buffer back for the optimizer step.
    pub fn take_gradients(&mut self) -> Vec<f32> {
        let all: Vec<usize> = (0..self.modules.len()).collect();
        let (flat, slots) = self.take_gradient_bucket(&all);
        self.reduce_slots = Some(slots);
        flat
    }

    /// The reduced gradients (the buffer [`Stage::take_gradients`] gave, summed over the
    /// replicas), used by the next optimizer step.
    pub fn set_gradients(&mut self, flat: &[f32]) -> Result<(), StageError> {
        let slots = self
            .reduce_slots
            .take()
            .unwrap_or(BucketSlots { slots: Vec::new() });
        self.set_gradient_bucket(slots, &[flat])
    }
}

/// Reads a buffer given as pieces, slice by slice.
struct Cursor<'a> {
    pieces: &'a [&'a [f32]],
    /// The piece and the value in it next read.
    at: (usize, usize),
}

impl Cursor<'_> {
    /// The next `n` values (fewer where the pieces end).
    fn take(&mut self, n: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n && self.at.0 < self.pieces.len() {
            let (p, off) = self.at;
            let rest = &self.pieces[p][off..];
            let k = rest.len().min(n - v.len());
            v.extend_from_slice(&rest[..k]);
            self.at = if k == rest.len() {
                (p + 1, 0)
            } else {
                (p, off + k)
            };
        }
        v
    }
}

/// Moves gradients into a buffer, recording where each went.
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
            match data.as_slice::<f32>() {
                Ok(values) => self.flat.extend_from_slice(values),
                Err(_) => self.flat.extend(data.iter::<f32>()),
            }
        }
    }
}

/// Adds newly accumulated gradients to those taken out before (a parameter whose weight
/// product ran after its bucket's other gradients were taken).
struct Merge<'a> {
    from: &'a mut GradientsParams,
    into: &'a mut GradientsParams,
}

impl ModuleVisitor for Merge<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.remove::<D>(param.id) {
            let g = match self.into.remove::<D>(param.id) {
                Some(old) => old + g,
                None => g,
            };
            self.into.register::<D>(param.id, g);
        }
    }
}
