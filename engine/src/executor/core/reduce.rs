//! The executor's all-reduces: a chunk's gradients over its replicas in buckets (the last
//! chunk adds its share of the step's loss), and the results of the norm's and the tie's
//! rings (`clip.rs`, `tie.rs`) coming back.

use super::{Action, ExecError, Executor};
use crate::allreduce::{Algo, Sum};
use crate::schedule::Instr;
use crate::trace::Span;
use brigade_stages::BucketSlots;
use burn::prelude::Tensor;

/// The norm's or the tie's all-reduce in flight (a chunk's gradients go in buckets:
/// [`Buckets`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Reducing {
    /// The squared gradient norms, for clipping at `max_norm`.
    Norm { max_norm: f64, start: u64 },
    /// The tied weight's gradient at `layer` of `chunk`.
    Tie {
        chunk: usize,
        layer: usize,
        start: u64,
    },
}

/// A chunk's gradients being summed over its replicas, bucket by bucket: each bucket is cut
/// (its weight products run, its gradients read out) and handed to the driver, which starts
/// its reduction at once; the next bucket is cut while that one travels.
#[derive(Debug)]
pub(super) struct Buckets {
    chunk: usize,
    ring: Vec<usize>,
    /// Local layers of each bucket (the stage's [`brigade_stages::Stage::gradient_buckets`]).
    plan: Vec<Vec<usize>>,
    /// Buckets cut so far.
    next: usize,
    slots: Vec<Option<BucketSlots>>,
    sums: Vec<Option<Sum>>,
    /// When each bucket was handed over, and its bytes.
    started: Vec<(u64, usize)>,
    /// The chunk holds the model's last layer: its last bucket carries the loss.
    last: bool,
}

impl Executor {
    /// Runs `AllReduce` of `chunk`'s gradients over its ring of replicas: cuts the next
    /// bucket and hands it over, or — every bucket cut — moves on (`None`) while they are
    /// summed; the first optimizer step waits for them ([`Executor::settle_buckets`]). The
    /// last chunk adds its share of the step's loss to its last bucket.
    pub(super) fn all_reduce(
        &mut self,
        instr: Instr,
        chunk: usize,
    ) -> Result<Option<Action>, ExecError> {
        let at = match self.buckets.iter().position(|b| b.chunk == chunk) {
            Some(i) => i,
            None => {
                let run = self.start_buckets(instr, chunk)?;
                self.buckets.push(run);
                self.buckets.len() - 1
            }
        };
        let b = &self.buckets[at];
        if b.next < b.plan.len() {
            return self.cut_bucket(instr, at).map(Some);
        }
        self.pc += 1;
        Ok(None)
    }

    /// Before an optimizer step: waits for every bucket in flight, then puts the sums back
    /// (`None`: nothing left to wait for).
    pub(super) fn settle_buckets(&mut self, instr: Instr) -> Result<Option<Action>, ExecError> {
        if self.buckets.is_empty() {
            return Ok(None);
        }
        if self
            .buckets
            .iter()
            .any(|b| b.sums.iter().any(Option::is_none))
        {
            return Ok(Some(Action::AwaitReduced));
        }
        for b in std::mem::take(&mut self.buckets) {
            let stage = self.stage_mut(b.chunk, instr)?;
            for (slots, sum) in b.slots.into_iter().zip(b.sums) {
                let (slots, mut sum) = (slots.expect("cut"), sum.expect("summed"));
                sum.truncate(slots.len());
                stage.set_gradient_bucket(slots, &sum.slices())?;
            }
        }
        Ok(None)
    }

    fn start_buckets(&mut self, instr: Instr, chunk: usize) -> Result<Buckets, ExecError> {
        let rank = self.rank;
        let ring = self
            .rings
            .iter()
            .find(|(c, _)| *c == chunk)
            .map(|(_, r)| r.clone())
            .ok_or(ExecError::Schedule {
                rank,
                instr,
                why: "no ring of replicas for this chunk",
            })?;
        let last = !self.edges.iter().any(|e| e.from_chunk == chunk);
        let plan = self
            .stage(chunk, instr)?
            .gradient_buckets(self.bucket_bytes);
        let n = plan.len();
        Ok(Buckets {
            chunk,
            ring,
            plan,
            next: 0,
            slots: (0..n).map(|_| None).collect(),
            sums: vec![None; n],
            started: Vec::with_capacity(n),
            last,
        })
    }

    /// Cuts the next bucket of run `at` and hands it to the driver.
    fn cut_bucket(&mut self, instr: Instr, at: usize) -> Result<Action, ExecError> {
        let b = &self.buckets[at];
        let (chunk, k, last_bucket) = (b.chunk, b.next, b.next + 1 == b.plan.len());
        let layers = b.plan[k].clone();
        let loss = (b.last && last_bucket).then(|| self.loss_sum());
        let start = self.tracer.now();
        let stage = self.stage_mut(chunk, instr)?;
        let batched = stage.deferred_products() > 0;
        let (mut data, slots) = stage.take_gradient_bucket(&layers);
        if batched {
            // The bucket's share of the step's batched weight products ran just now: the
            // weight pass, traced as ZB-H1's W is (`mb`: the bucket).
            let (end, step) = (self.tracer.now(), self.step);
            let span = Span::new("backward_weight", start, end, step, k as u64);
            self.tracer.record(span);
        }
        if let Some(loss) = loss {
            // The replica's share of the step's mean loss, as two f32s (high and low
            // parts) so the sum keeps an f64's precision.
            let partial = loss / self.total_microbatches as f64;
            let hi = partial as f32;
            data.extend([hi, (partial - hi as f64) as f32]);
        }
        let now = self.tracer.now();
        let b = &mut self.buckets[at];
        b.slots[k] = Some(slots);
        b.started.push((now, data.len() * 4));
        b.next += 1;
        let members = b.ring.len();
        Ok(Action::ReduceBucket {
            edge: chunk as u32,
            bucket: k as u32,
            ring: b.ring.clone(),
            me: self.replica,
            algo: Algo::choose(data.len() * 4, members),
            data,
        })
    }

    /// Bucket `bucket` of chunk `edge`'s gradients (asked for by [`Action::ReduceBucket`]) is
    /// summed over the replicas.
    pub fn bucket_reduced(
        &mut self,
        edge: u32,
        bucket: u32,
        mut data: Sum,
    ) -> Result<(), ExecError> {
        let (rank, step) = (self.rank, self.step);
        let unexpected = || ExecError::Schedule {
            rank,
            instr: Instr::AllReduce { chunk: edge },
            why: "a bucket's sum arrived that is not in flight",
        };
        let b = self
            .buckets
            .iter_mut()
            .find(|b| b.chunk == edge as usize)
            .ok_or_else(unexpected)?;
        let k = bucket as usize;
        if k >= b.next || b.sums[k].is_some() {
            return Err(unexpected());
        }
        if b.last && k + 1 == b.plan.len() {
            // The loss rides at the end of the last bucket, as (hi, lo).
            let n = data.len();
            let value = |i: Option<usize>| i.and_then(|i| data.value(i)).unwrap_or(0.0) as f64;
            let (hi, lo) = (value(n.checked_sub(2)), value(n.checked_sub(1)));
            data.truncate(n.saturating_sub(2));
            self.global_loss = Some(hi + lo);
        }
        let (start, bytes) = b.started[k];
        let members = b.ring.len();
        let peer = b.ring[(self.replica + 1) % members];
        b.sums[k] = Some(data);
        let span = Span::new("allreduce", start, self.tracer.now(), step, bucket as u64)
            .on(edge, peer)
            .reduced(bytes as u64, Algo::choose(bytes, members).name());
        self.tracer.record(span);
        Ok(())
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

    /// The norm's or the tie's all-reduce asked for by [`Action::AllReduce`] is done: `data`
    /// is the sum.
    pub fn reduced(&mut self, data: Vec<f32>) -> Result<(), ExecError> {
        let step = self.step;
        let start = match self.reducing.take() {
            None => {
                return Err(ExecError::Schedule {
                    rank: self.rank,
                    instr: Instr::AllReduce { chunk: 0 },
                    why: "an all-reduce result arrived with none in flight",
                });
            }
            Some(Reducing::Norm { max_norm, start }) => {
                self.norm_reduced(&data, max_norm);
                start
            }
            Some(Reducing::Tie {
                chunk,
                layer,
                start,
            }) => {
                self.tie_reduced(chunk, layer, &data);
                start
            }
        };
        // The optimizer step that asked for it runs next.
        self.tracer
            .record(Span::new("allreduce", start, self.tracer.now(), step, 0));
        Ok(())
    }
}
