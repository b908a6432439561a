//! The all-reduces a rank has in flight, as one pure state machine over the ring machines
//! ([`crate::allreduce::Ring`]): given a job or a received segment, it says which segments
//! to send and which sums are finished. No I/O: a transport runs it (today on the rank's
//! compute thread, [`super::inline`]; decision 0023 measured the I/O thread and a thread of
//! its own), so where the sums run is the transport's choice alone.
//!
//! A segment is tagged with its reduction's edge (the chunk, or the norm's or the tie's ring),
//! the step, and `bucket << 32 | ring step` in the micro-batch field.

use crate::allreduce::{Algo, Ring, RingStep};
use crate::message::{ReduceJob, Reduced};
use std::collections::HashMap;

/// A ring segment between two members.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The sending rank (received) or the receiving rank (to send).
    pub peer: usize,
    pub edge: u32,
    pub step: u64,
    /// `bucket << 32 | ring step`.
    pub tag: u64,
    pub values: Vec<f32>,
}

/// What the reducer wants done.
#[derive(Debug, PartialEq)]
pub enum Out {
    Send(Segment),
    Done(Reduced),
}

/// A peer's segment this rank cannot take: it names the peer and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "rank {peer}'s all-reduce segment (edge {edge}, step {step}, bucket {bucket}, ring step {ring_step}): {why}"
)]
pub struct SegmentError {
    pub peer: usize,
    pub edge: u32,
    pub step: u64,
    pub bucket: u32,
    pub ring_step: u32,
    pub why: String,
}

struct Active {
    machine: Ring,
    to: usize,
    /// The member whose segments this one sums.
    from: usize,
    step: u64,
    /// Values before padding to whole segments.
    len: usize,
}

/// A reduction: its edge and bucket.
type Key = (u32, u32);

#[derive(Default)]
pub struct Reducer {
    active: HashMap<Key, Active>,
    /// Segments that arrived before their reduction began or before the one they follow, by
    /// (edge, step, tag), with their sender.
    early: HashMap<(u32, u64, u64), Segment>,
    /// The step of the latest reduction started (`None` before the first).
    current: Option<u64>,
}

pub fn tag(bucket: u32, ring_step: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(ring_step)
}

fn untag(tag: u64) -> (u32, u32) {
    ((tag >> 32) as u32, tag as u32)
}

/// Why `seg` is refused, naming its sender and what it carried.
fn refused(seg: &Segment, why: String) -> SegmentError {
    let (bucket, ring_step) = untag(seg.tag);
    SegmentError {
        peer: seg.peer,
        edge: seg.edge,
        step: seg.step,
        bucket,
        ring_step,
        why,
    }
}

/// Whether a segment of step `step` can reach a rank whose latest reduction is of step
/// `current`: every reduction of a step ends before the step does, and a replica can be at
/// most one step ahead (its next reduction needs this rank's segments).
fn in_reach(step: u64, current: u64) -> bool {
    step == current || step == current + 1
}

impl Reducer {
    /// Starts `job`: its first segment to send (or its sum, alone in its ring).
    pub fn start(&mut self, job: ReduceJob) -> Result<Vec<Out>, SegmentError> {
        let ReduceJob {
            edge,
            bucket,
            step,
            ring,
            me,
            algo,
            mut data,
        } = job;
        let (len, d) = (data.len(), ring.len());
        if algo == Algo::Ring {
            // Whole segments of at least one value each.
            data.resize(len.max(1).div_ceil(d) * d, 0.0);
        }
        self.current = Some(self.current.map_or(step, |c| c.max(step)));
        let (machine, first) = Ring::start_with(algo, d, me, data);
        let active = Active {
            machine,
            to: ring[(me + 1) % d],
            from: ring[(me + d - 1) % d],
            step,
            len,
        };
        let mut out = Vec::new();
        self.advance((edge, bucket), active, first, &mut out);
        self.feed(&mut out)?;
        Ok(out)
    }

    /// A peer's segment arrived: what it lets happen.
    pub fn arrived(&mut self, seg: Segment) -> Result<Vec<Out>, SegmentError> {
        let refuse = |why: String| refused(&seg, why);
        if let Some(current) = self.current
            && !in_reach(seg.step, current)
        {
            return Err(refuse(format!(
                "this rank's reductions are at step {current}"
            )));
        }
        let key = (seg.edge, seg.step, seg.tag);
        if self.early.contains_key(&key) {
            return Err(refuse("it came twice".into()));
        }
        self.early.insert(key, seg);
        let mut out = Vec::new();
        self.feed(&mut out)?;
        Ok(out)
    }

    /// Reductions in flight.
    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// Carries out `next` for reduction `key`.
    fn advance(&mut self, key: Key, active: Active, next: RingStep, out: &mut Vec<Out>) {
        match next {
            RingStep::Done(mut sum) => {
                sum.truncate(active.len);
                out.push(Out::Done(Reduced {
                    edge: key.0,
                    bucket: key.1,
                    step: active.step,
                    sum,
                }));
            }
            RingStep::Send { step: s, data } => {
                out.push(Out::Send(Segment {
                    peer: active.to,
                    edge: key.0,
                    step: active.step,
                    tag: tag(key.1, s),
                    values: data,
                }));
                self.active.insert(key, active);
            }
        }
    }

    /// Hands every reduction the segment it waits for, as long as one has arrived.
    fn feed(&mut self, out: &mut Vec<Out>) -> Result<(), SegmentError> {
        loop {
            let ready = self.active.iter().find_map(|(key, a)| {
                let want = (key.0, a.step, tag(key.1, a.machine.waiting_for()));
                self.early.contains_key(&want).then_some((*key, want))
            });
            let Some((key, want)) = ready else {
                return Ok(());
            };
            let mut active = self.active.remove(&key).expect("ready");
            let seg = self.early.remove(&want).expect("arrived");
            let s = active.machine.waiting_for();
            let refuse = |why: String| refused(&seg, why);
            if seg.peer != active.from {
                return Err(refuse(format!(
                    "this rank sums rank {}'s segments in this ring",
                    active.from
                )));
            }
            let next = active
                .machine
                .receive(s, &seg.values)
                .map_err(|e| refuse(e.0))?;
            self.advance(key, active, next, out);
        }
    }
}

#[cfg(test)]
#[path = "reducer_tests.rs"]
mod tests;
