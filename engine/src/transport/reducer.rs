//! The all-reduces a rank has in flight, as one pure state machine over the ring machines
//! ([`crate::allreduce::Ring`]): given a job or a received segment, it says which segments
//! to send and which sums are finished. No I/O: a transport runs it (today on the rank's
//! compute thread, [`super::inline`]; decision 0023 measured the I/O thread and a thread of
//! its own), so where the sums run is the transport's choice alone.
//!
//! A segment is tagged with its reduction's edge (the chunk, or the norm's or the tie's ring),
//! the step, and [`tag`]`(bucket, lane, ring step)` in the micro-batch field.

use crate::allreduce::{Algo, Ring, RingStep, Shared};
use crate::message::{ReduceJob, Reduced};
use std::collections::HashMap;

/// A ring segment between two members.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The sending rank (received) or the receiving rank (to send).
    pub peer: usize,
    pub edge: u32,
    pub step: u64,
    /// [`tag`]`(bucket, lane, ring step)`.
    pub tag: u64,
    /// Sent from where they lie; a received segment's are its own buffer.
    pub values: Shared,
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
    "rank {peer}'s all-reduce segment (edge {edge}, step {step}, bucket {bucket}, lane {lane}, ring step {ring_step}): {why}"
)]
pub struct SegmentError {
    pub peer: usize,
    pub edge: u32,
    pub step: u64,
    pub bucket: u32,
    pub lane: u32,
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

pub struct Reducer {
    /// Values in a ring segment at most ([`crate::allreduce::SEGMENT_VALUES`]).
    segment: usize,
    active: HashMap<Key, Active>,
    /// Segments that arrived before their reduction began or before the one they follow, by
    /// (edge, step, tag), with their sender.
    early: HashMap<(u32, u64, u64), Segment>,
    /// The step of the latest reduction started (`None` before the first).
    current: Option<u64>,
}

/// A segment's tag: `bucket << 40 | lane << 24 | ring step` — 24 bits of bucket (a bucket
/// holds at least one layer), 16 of lane ([`crate::allreduce::MAX_LANES`]), 24 of ring step
/// (rings of up to 2^23 members).
pub fn tag(bucket: u32, lane: u32, ring_step: u32) -> u64 {
    debug_assert!(bucket < 1 << 24 && lane < 1 << 16 && ring_step < 1 << 24);
    (u64::from(bucket) << 40) | (u64::from(lane) << 24) | u64::from(ring_step)
}

/// A tag's (bucket, lane, ring step).
pub fn untag(tag: u64) -> (u32, u32, u32) {
    (
        (tag >> 40) as u32,
        (tag >> 24) as u32 & 0xffff,
        tag as u32 & 0xff_ffff,
    )
}

/// Why `seg` is refused, naming its sender and what it carried.
fn refused(seg: &Segment, why: String) -> SegmentError {
    let (bucket, lane, ring_step) = untag(seg.tag);
    SegmentError {
        peer: seg.peer,
        edge: seg.edge,
        step: seg.step,
        bucket,
        lane,
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

impl Default for Reducer {
    fn default() -> Reducer {
        Reducer::with_segment(crate::allreduce::SEGMENT_VALUES)
    }
}

impl Reducer {
    /// A reducer whose ring segments carry at most `segment` values (every member of a ring
    /// must use the same).
    pub fn with_segment(segment: usize) -> Reducer {
        Reducer {
            segment: segment.max(1),
            active: HashMap::new(),
            early: HashMap::new(),
            current: None,
        }
    }

    /// Starts `job`: the first segment of each lane to send (or its sum, alone in its ring).
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
        let lanes = algo.lanes(len, d, self.segment);
        if algo == Algo::Ring {
            // Whole segments of at least one value each, in lanes of equal length.
            let whole = lanes * d;
            data.resize(len.max(1).div_ceil(whole) * whole, 0.0);
        }
        self.current = Some(self.current.map_or(step, |c| c.max(step)));
        let (machine, firsts) = Ring::start_with(algo, d, me, data, lanes);
        let active = Active {
            machine,
            to: ring[(me + 1) % d],
            from: ring[(me + d - 1) % d],
            step,
            len,
        };
        let key = (edge, bucket);
        let mut out = Vec::new();
        for first in firsts {
            self.emit(key, &active, first, &mut out);
        }
        if d > 1 {
            self.refuse_early(key, &active)?;
            self.active.insert(key, active);
            for lane in 0..lanes as u32 {
                self.drain(key, lane, &mut out)?;
            }
        }
        Ok(out)
    }

    /// A segment that came before reduction `key` began but that it can never take (a lane
    /// it lacks, a ring step past its last): refused now, naming its sender.
    fn refuse_early(&self, key: Key, active: &Active) -> Result<(), SegmentError> {
        for ((edge, step, tag), seg) in &self.early {
            let (bucket, lane, ring_step) = untag(*tag);
            if (*edge, bucket) == key
                && *step == active.step
                && let Some(why) = active.machine.never_takes(lane, ring_step)
            {
                return Err(refused(seg, why));
            }
        }
        Ok(())
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
        let (bucket, lane, ring_step) = untag(seg.tag);
        let reduction = (seg.edge, bucket);
        if let Some(a) = self.active.get(&reduction)
            && a.step == seg.step
            && let Some(why) = a.machine.never_takes(lane, ring_step)
        {
            return Err(refuse(why));
        }
        self.early.insert(key, seg);
        let mut out = Vec::new();
        self.drain(reduction, lane, &mut out)?;
        Ok(out)
    }

    /// Reductions in flight.
    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// What the ring machine of reduction `key` asked for, as the reducer's output.
    fn emit(&self, key: Key, active: &Active, next: RingStep, out: &mut Vec<Out>) {
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
            RingStep::Send {
                lane,
                step: s,
                data,
            } => out.push(Out::Send(Segment {
                peer: active.to,
                edge: key.0,
                step: active.step,
                tag: tag(key.1, lane, s),
                values: data,
            })),
        }
    }

    /// Hands lane `lane` of reduction `key` the segments it waits for, as long as they have
    /// arrived.
    fn drain(&mut self, key: Key, lane: u32, out: &mut Vec<Out>) -> Result<(), SegmentError> {
        loop {
            let Some(active) = self.active.get_mut(&key) else {
                return Ok(());
            };
            if lane as usize >= active.machine.lanes() {
                return Ok(());
            }
            let s = active.machine.waiting_for(lane);
            let want = (key.0, active.step, tag(key.1, lane, s));
            let Some(mut seg) = self.early.remove(&want) else {
                return Ok(());
            };
            let values = std::mem::take(&mut seg.values).into_values();
            let refuse = |why: String| refused(&seg, why);
            if seg.peer != active.from {
                return Err(refuse(format!(
                    "this rank sums rank {}'s segments in this ring",
                    active.from
                )));
            }
            let next = active
                .machine
                .receive(lane, s, values)
                .map_err(|e| refuse(e.0))?;
            let Some(next) = next else { continue };
            if matches!(next, RingStep::Done(_)) {
                let active = self.active.remove(&key).expect("active");
                self.emit(key, &active, next, out);
                return Ok(());
            }
            let active = &self.active[&key];
            self.emit(key, active, next, out);
        }
    }
}

#[cfg(test)]
#[path = "reducer_tests.rs"]
mod tests;
