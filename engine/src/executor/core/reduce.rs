//! The executor's all-reduces: a chunk's gradients over its replicas (the last chunk adds its
//! share of the step's loss), and the results of the norm's and the tie's rings
//! (`clip.rs`, `tie.rs`) coming back.

use super::{Action, ExecError, Executor};
use crate::schedule::Instr;
use crate::trace::Span;
use burn::prelude::Tensor;

/// The all-reduce in flight.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reducing {
    /// A chunk's gradients (with the loss on the last chunk).
    Chunk {
        chunk: usize,
        last: bool,
        start: u64,
    },
    /// The squared gradient norms, for clipping at `max_norm`.
    Norm { max_norm: f64, start: u64 },
    /// The tied weight's gradient at `layer` of `chunk`.
    Tie {
        chunk: usize,
        layer: usize,
        start: u64,
    },
}

impl Executor {
    /// Starts `AllReduce` of `chunk`'s gradients over its ring of replicas (the last chunk adds
    /// its share of the step's loss).
    pub(super) fn all_reduce(&mut self, instr: Instr, chunk: usize) -> Result<Action, ExecError> {
        let rank = self.rank;
        let inconsistent = move |why| ExecError::Schedule { rank, instr, why };
        let ring = self
            .rings
            .iter()
            .find(|(c, _)| *c == chunk)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| inconsistent("no ring of replicas for this chunk"))?;
        let last = !self.edges.iter().any(|e| e.from_chunk == chunk);
        let mut data = self.stage_mut(chunk, instr)?.take_gradients();
        if last {
            // The replica's share of the step's mean loss, as two f32s (high and low
            // parts) so the sum keeps an f64's precision.
            let partial = self.loss_sum() / self.total_microbatches as f64;
            let hi = partial as f32;
            data.extend([hi, (partial - hi as f64) as f32]);
        }
        let start = self.tracer.now();
        self.reducing = Some(Reducing::Chunk { chunk, last, start });
        Ok(Action::AllReduce {
            chunk,
            me: self.replica,
            ring,
            data,
        })
    }

    /// This step's micro-batch losses summed in micro-batch order, whatever order the
    /// schedule ran them in, so every split and schedule reports the same loss to the last bit.
    pub(super) fn loss_sum(&mut self) -> f64 {
        if self.losses.is_empty() {
            return 0.0;
        }
        let mut losses = std::mem::take(&mut self.losses);
        losses.sort_by_key(|(mb, _)| *mb);
        let values = Tensor::cat(losses.into_iter().map(|(_, l)| l).collect(), 0)
            .into_data()
            .convert::<f32>();
        values.iter::<f32>().map(|v| v as f64).sum()
    }

    /// The all-reduce asked for by [`Action::AllReduce`] is done: `data` is the sum.
    pub fn reduced(&mut self, data: Vec<f32>) -> Result<(), ExecError> {
        let step = self.step;
        let (chunk, last, start) = match self.reducing.take() {
            None => {
                return Err(ExecError::Schedule {
                    rank: self.rank,
                    instr: Instr::AllReduce { chunk: 0 },
                    why: "an all-reduce result arrived with none in flight",
                });
            }
            Some(Reducing::Norm { max_norm, start }) => {
                self.norm_reduced(&data, max_norm);
                self.tracer
                    .record(Span::new("allreduce", start, self.tracer.now(), step, 0));
                // The optimizer step that asked for it runs next.
                return Ok(());
            }
            Some(Reducing::Tie {
                chunk,
                layer,
                start,
            }) => {
                self.tie_reduced(chunk, layer, &data);
                self.tracer
                    .record(Span::new("allreduce", start, self.tracer.now(), step, 0));
                return Ok(());
            }
            Some(Reducing::Chunk { chunk, last, start }) => (chunk, last, start),
        };
        let mut data = data;
        if last {
            let lo = data.pop().unwrap_or(0.0) as f64;
            let hi = data.pop().unwrap_or(0.0) as f64;
            self.global_loss = Some(hi + lo);
        }
        let instr = Instr::AllReduce {
            chunk: chunk as u32,
        };
        self.stage_mut(chunk, instr)?.set_gradients(&data)?;
        self.tracer
            .record(Span::new("allreduce", start, self.tracer.now(), step, 0));
        self.pc += 1;
        Ok(())
    }
}
