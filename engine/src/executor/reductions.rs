//! The driver's side of the all-reduces: the reductions in flight, each a pure state machine
//! ([`crate::allreduce::Ring`]) fed the segments the transport brings. A bucket's reduction
//! advances whenever the driver hears from the transport — between the executor's actions,
//! so it travels while the next bucket is made — and the I/O thread moves its bytes.
//!
//! A segment is tagged with its reduction's edge (the chunk, or the norm's or the tie's ring),
//! the step, and `bucket << 32 | ring step` in the micro-batch field.

use super::core::{ExecError, Executor};
use super::driver::DriveError;
use crate::allreduce::{Algo, Ring, RingStep};
use crate::message::{Incoming, Outgoing};
use crate::transport::Transport;
use brigade_stages::Act;
use brigade_stages::codec::Kind;
use std::collections::HashMap;
use std::time::Duration;

/// A reduction: its edge and bucket.
pub(super) type Key = (u32, u32);

struct Active {
    machine: Ring,
    to: usize,
    step: u64,
    /// Values before padding to whole segments.
    len: usize,
}

/// What a finished reduction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A gradient bucket: the sum goes to [`Executor::bucket_reduced`].
    Bucket,
    /// The norm's or the tie's ring: the driver waits for it.
    Blocking,
}

#[derive(Default)]
pub(super) struct Reductions {
    active: HashMap<Key, (Active, Owner)>,
    /// Segments that arrived before their reduction began (a replica ahead), by (edge, step,
    /// tag).
    early: HashMap<(u32, u64, u64), Act>,
    /// Finished blocking reductions.
    done: HashMap<Key, Vec<f32>>,
}

/// Whether a segment of step `step` can reach a rank at step `current`: every reduction of a
/// step ends before the step does, and a replica can be at most one step ahead (its next
/// reduction needs this rank's segments).
fn in_reach(step: u64, current: u64) -> bool {
    step == current || step == current + 1
}

fn tag(bucket: u32, ring_step: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(ring_step)
}

/// What one reduction is: its key (edge, bucket), the ranks summing (in ring order) and this
/// rank's place among them, how, and for whom.
pub(super) struct Reduction<'a> {
    pub key: Key,
    pub ring: &'a [usize],
    pub me: usize,
    pub algo: Algo,
    pub owner: Owner,
}

impl Reductions {
    /// Starts summing `data` in reduction `r`; sends its first segment.
    pub(super) fn start(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
        r: Reduction,
        mut data: Vec<f32>,
    ) -> Result<(), DriveError> {
        let Reduction {
            key: (edge, bucket),
            ring,
            me,
            algo,
            owner,
        } = r;
        let (len, d) = (data.len(), ring.len());
        if algo == Algo::Ring {
            // Whole segments of at least one value each.
            data.resize(len.max(1).div_ceil(d) * d, 0.0);
        }
        let (machine, first) = Ring::start_with(algo, d, me, data);
        let active = Active {
            machine,
            to: ring[(me + 1) % d],
            step: exec.step(),
            len,
        };
        self.advance(transport, exec, (edge, bucket), active, owner, first)?;
        if owner == Owner::Bucket && bucket == 0 {
            crate::failpoint::reduce_started(exec.rank(), exec.step());
        }
        Ok(())
    }

    /// Carries out `next` for reduction `key`: sends a segment and waits for the reply, or
    /// hands the sum on.
    fn advance(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
        key: Key,
        active: Active,
        owner: Owner,
        next: RingStep,
    ) -> Result<(), DriveError> {
        match next {
            RingStep::Done(mut sum) => {
                sum.truncate(active.len);
                match owner {
                    Owner::Bucket => exec.bucket_reduced(key.0, key.1, sum)?,
                    Owner::Blocking => {
                        self.done.insert(key, sum);
                    }
                }
            }
            RingStep::Send { step: s, data } => {
                let len = data.len();
                let device = exec.stages()[0].device().clone().inner();
                transport.send(Outgoing {
                    edge: key.0,
                    to: active.to,
                    kind: Kind::Reduce,
                    step: active.step,
                    microbatch: tag(key.1, s),
                    tensor: Act::from_f32(data, &[1, len], &device),
                })?;
                self.active.insert(key, (active, owner));
            }
        }
        Ok(())
    }

    /// Feeds every reduction the segments that have arrived, as far as they go; whether any
    /// moved.
    fn feed(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
    ) -> Result<bool, DriveError> {
        let mut moved = false;
        // A reply sent may make another segment that is already here the awaited one.
        loop {
            let ready: Vec<Key> = self
                .active
                .iter()
                .filter(|(key, (a, _))| {
                    let want = tag(key.1, a.machine.waiting_for());
                    self.early.contains_key(&(key.0, a.step, want))
                })
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                return Ok(moved);
            }
            moved = true;
            for key in ready {
                self.receive(transport, exec, key)?;
            }
        }
    }

    /// Hands reduction `key` the segment it waits for (which has arrived).
    fn receive(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
        key: Key,
    ) -> Result<(), DriveError> {
        let (mut active, owner) = self.active.remove(&key).expect("ready");
        let s = active.machine.waiting_for();
        let segment = self
            .early
            .remove(&(key.0, active.step, tag(key.1, s)))
            .expect("arrived");
        // Taken, not copied: the received segment's storage is its own.
        let data = segment.into_data().convert::<f32>();
        let next = match data.as_slice::<f32>() {
            Ok(values) => active.machine.receive(s, values)?,
            Err(_) => {
                let values: Vec<f32> = data.iter::<f32>().collect();
                active.machine.receive(s, &values)?
            }
        };
        self.advance(transport, exec, key, active, owner, next)
    }

    /// A received message: a segment waits for its reduction, anything else goes to the
    /// executor. A segment of a step this rank has finished (or of one a replica cannot have
    /// reached), or one that came twice, is a peer's error: it would otherwise lie here unused
    /// until the process ends, or replace the segment a reduction waits for.
    pub(super) fn accept(&mut self, exec: &mut Executor, msg: Incoming) -> Result<(), ExecError> {
        if msg.kind != Kind::Reduce {
            return exec.deliver(msg);
        }
        let current = exec.step();
        if !in_reach(msg.step, current) {
            return Err(ExecError::Unexpected {
                rank: exec.rank(),
                edge: msg.edge,
                kind: msg.kind,
                step: msg.step,
                microbatch: msg.microbatch,
                current,
            });
        }
        let key = (msg.edge, msg.step, msg.microbatch);
        if self.early.contains_key(&key) {
            return Err(ExecError::Duplicate {
                rank: exec.rank(),
                edge: msg.edge,
                kind: msg.kind,
                step: msg.step,
                microbatch: msg.microbatch,
            });
        }
        self.early.insert(key, msg.tensor);
        Ok(())
    }

    /// Advances the reductions with what has arrived, then takes what arrives next (waiting
    /// up to `timeout` for it, unless a reduction moved: its sum may be what the caller
    /// waits for) and advances them again.
    pub(super) fn pump(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
        timeout: Duration,
    ) -> Result<(), DriveError> {
        let timeout = if self.feed(transport, exec)? {
            Duration::ZERO
        } else {
            timeout
        };
        if let Some(msg) = transport.recv(timeout)? {
            self.accept(exec, msg)?;
            // Take what else has arrived before computing again.
            while let Some(more) = transport.recv(Duration::ZERO)? {
                self.accept(exec, more)?;
            }
        }
        self.feed(transport, exec)?;
        Ok(())
    }

    /// The sum of blocking reduction `key`, once finished.
    pub(super) fn take_done(&mut self, key: Key) -> Option<Vec<f32>> {
        self.done.remove(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_of_finished_or_unreachable_steps_are_out_of_reach() {
        for (step, current, ok) in [
            (4, 4, true),
            (5, 4, true),
            (3, 4, false),
            (6, 4, false),
            (0, 0, true),
            (1, 0, true),
            (2, 0, false),
        ] {
            assert_eq!(
                in_reach(step, current),
                ok,
                "segment of step {step} at step {current}"
            );
        }
    }
}
