//! Ring all-reduce (reduce-scatter, then all-gather) as a pure state machine: it is given
//! received segments and says what to send next; the driver moves the bytes. D members in a
//! ring, member i sends to i+1 and receives from i−1; the buffer is cut into D segments.
//!
//! ```text
//! reduce-scatter, step s = 0..D−2:  send segment (i − s) mod D,  add the received (i − s − 1)
//! all-gather,     step s = D−1..:   send segment (i + 1 − s') mod D (s' = s − D + 1),
//!                                    keep the received (i − s') mod D
//! ```
//!
//! After reduce-scatter member i holds the full sum of segment (i + 1) mod D; all-gather carries
//! each full sum around the ring, so every member ends with the same bits. Each member sends
//! 2·(D−1)/D of the buffer.
//!
//! A large buffer is cut into lanes ([`SEGMENT_VALUES`]), each lane such a ring over its own
//! part of the buffer: the segments of the lanes travel one after another, so a member sums
//! and forwards lane l's while lane l + 1's are still arriving (the pipelined ring of NCCL
//! and gloo). Every lane ends with the same bits on every member, as the ring does.
//!
//! Two members may instead swap whole buffers ([`Algo::Direct`]): one message each way instead
//! of two, the same bytes, and both add `a + b` — the same bits either way round, since IEEE
//! addition commutes. [`Algo::choose`] takes it for small buffers, where the second round
//! trip costs more than the extra additions.

mod shared;
pub use shared::{Shared, Sum, Values};

/// What the machine wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum RingStep {
    /// Send `data` to the next member, tagged `lane` and `step`.
    Send { lane: u32, step: u32, data: Shared },
    /// Every segment is reduced: the buffer.
    Done(Sum),
}

/// A malformed or unexpected segment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("all-reduce: {0}")]
pub struct RingError(pub String);

/// How a buffer is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Ring,
    /// Two members swap their buffers.
    Direct,
}

/// Buffers up to this size are swapped whole between two members.
pub const DIRECT_MAX_BYTES: usize = 1 << 20;

/// The values a ring's segment carries at most (1 MiB of f32). A bucket is cut into lanes of
/// `members` such segments, each lane a ring of its own, so a member sums and forwards one
/// lane's segment while the next lanes' are still on the wire: the reduction streams at the
/// link's speed instead of waiting for whole half-buckets (issue 28, docs/performance.md).
pub const SEGMENT_VALUES: usize = 1 << 18;

/// Lanes in one buffer at most (the lane is 16 bits of a segment's tag).
pub const MAX_LANES: usize = 1 << 16;

impl Algo {
    /// The algorithm for a buffer of `bytes` over `members`: a swap for two members and a
    /// small buffer, the ring otherwise (it moves the same bytes for two members but adds
    /// half as many values, and for more members it is the only route the plan opens).
    pub fn choose(bytes: usize, members: usize) -> Algo {
        if members == 2 && bytes <= DIRECT_MAX_BYTES {
            Algo::Direct
        } else {
            Algo::Ring
        }
    }

    /// The name in traces.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ring => "ring",
            Algo::Direct => "direct",
        }
    }

    /// Lanes for `len` values over `members` with segments of at most `segment` values (a
    /// swap is one lane): every member computes the same.
    pub fn lanes(self, len: usize, members: usize, segment: usize) -> usize {
        match self {
            Algo::Direct => 1,
            Algo::Ring => len.div_ceil(members * segment.max(1)).clamp(1, MAX_LANES),
        }
    }
}

/// One member's all-reduce of one buffer, in lanes.
///
/// No segment is copied: the member's buffer is shared, unchanged, with the sends of its own
/// segments; a received segment has the member's own added into it (a + b, the same bits as
/// b + a) or stands as it came, and is then both kept and forwarded.
#[derive(Debug)]
pub struct Ring {
    members: usize,
    me: usize,
    /// Values in the buffer.
    len: usize,
    /// Each segment's values now, lane by lane: a view of the member's buffer until the
    /// segment is summed or replaced.
    slots: Vec<Shared>,
    /// The step whose segment each lane waits for.
    steps: Vec<u32>,
    /// Lanes not yet finished.
    open: usize,
    /// [`Algo::Direct`]: one step, the whole buffer.
    direct: bool,
}

impl Ring {
    /// Member `me` of `members` starts reducing `data` in one lane; returns the machine and
    /// its first action (a send, or the buffer itself when alone).
    pub fn start(members: usize, me: usize, data: Vec<f32>) -> (Ring, RingStep) {
        let (ring, mut first) = Ring::start_with(Algo::Ring, members, me, data, 1);
        (ring, first.remove(0))
    }

    /// [`Ring::start`] with the algorithm `algo` ([`Algo::Direct`] needs two members) over
    /// `lanes` lanes (one for a swap): the first send of each lane.
    pub fn start_with(
        algo: Algo,
        members: usize,
        me: usize,
        data: Vec<f32>,
        lanes: usize,
    ) -> (Ring, Vec<RingStep>) {
        assert!(me < members, "member {me} of {members}");
        assert!(
            algo == Algo::Ring || members == 2,
            "a direct swap has two members"
        );
        assert!(
            (1..=MAX_LANES).contains(&lanes) && (algo == Algo::Ring || lanes == 1),
            "{lanes} lanes"
        );
        let len = data.len();
        let direct = algo == Algo::Direct;
        let mut ring = Ring {
            members,
            me,
            len,
            slots: Vec::new(),
            steps: vec![0; lanes],
            open: lanes,
            direct,
        };
        if members == 1 {
            return (ring, vec![RingStep::Done(Sum::from(data))]);
        }
        let own = std::sync::Arc::new(Values::F32(data));
        ring.slots = if direct {
            vec![Shared::view(&own, 0..len)]
        } else {
            (0..lanes as u32)
                .flat_map(|l| (0..members).map(move |k| (l, k)))
                .map(|(l, k)| Shared::view(&own, ring.segment(l, k)))
                .collect()
        };
        let first = (0..lanes as u32).map(|l| ring.send(l, 0)).collect();
        (ring, first)
    }

    fn total_steps(&self) -> u32 {
        if self.direct {
            1
        } else {
            2 * (self.members as u32 - 1)
        }
    }

    /// The values of segment `k` of lane `lane` in the buffer.
    fn segment(&self, lane: u32, k: usize) -> std::ops::Range<usize> {
        let (n, lanes, d) = (self.len, self.steps.len(), self.members);
        let l = lane as usize;
        let (from, to) = (l * n / lanes, (l + 1) * n / lanes);
        let m = to - from;
        (from + k * m / d)..(from + (k + 1) * m / d)
    }

    /// Where segment `k` of lane `lane` is kept.
    fn slot(&self, lane: u32, k: usize) -> usize {
        if self.direct {
            0
        } else {
            lane as usize * self.members + k
        }
    }

    /// The segment sent at `step`.
    fn sent_segment(&self, step: u32) -> usize {
        let (d, i, s) = (self.members, self.me, step as usize);
        if s < d - 1 {
            (i + d - s) % d
        } else {
            (i + 1 + d - (s - (d - 1))) % d
        }
    }

    fn send(&self, lane: u32, step: u32) -> RingStep {
        let data = self.slots[self.slot(lane, self.sent_segment(step))].clone();
        RingStep::Send { lane, step, data }
    }

    /// Lanes of this buffer.
    pub fn lanes(&self) -> usize {
        self.steps.len()
    }

    /// The step lane `lane` waits for (past the last: the lane is finished).
    pub fn waiting_for(&self, lane: u32) -> u32 {
        self.steps.get(lane as usize).copied().unwrap_or(u32::MAX)
    }

    /// Why this machine will never take a segment of `lane` and `step`, if it will not: a
    /// lane it lacks, a step past its last, or one it has taken already.
    pub fn never_takes(&self, lane: u32, step: u32) -> Option<String> {
        let (lanes, total) = (self.lanes(), self.total_steps());
        if lane as usize >= lanes {
            Some(format!("this reduction has {lanes} lane(s)"))
        } else if step >= total {
            Some(format!("this reduction has {total} ring step(s)"))
        } else if step < self.waiting_for(lane) {
            Some(format!("lane {lane} has taken ring step {step} already"))
        } else {
            None
        }
    }

    /// The previous member's segment of `lane` and `step` arrived: the lane's next send,
    /// the sum when every lane is finished, or nothing while other lanes are not.
    pub fn receive(
        &mut self,
        lane: u32,
        step: u32,
        mut data: Values,
    ) -> Result<Option<RingStep>, RingError> {
        let want = self.waiting_for(lane);
        if lane as usize >= self.lanes() {
            return Err(RingError(format!(
                "segment of lane {lane}, this buffer has {}",
                self.lanes()
            )));
        }
        if step != want || step >= self.total_steps() {
            return Err(RingError(format!(
                "segment of step {step} while waiting for step {want}"
            )));
        }
        // The previous member sent at this step the segment one below ours (a swap: all).
        let d = self.members;
        let at = self.slot(lane, (self.sent_segment(step) + d - 1) % d);
        if data.len() != self.slots[at].len() {
            return Err(RingError(format!(
                "segment of {} values at step {step}, expected {}",
                data.len(),
                self.slots[at].len()
            )));
        }
        if self.direct || (step as usize) < d - 1 {
            for (b, a) in data.as_mut_slice().iter_mut().zip(self.slots[at].iter()) {
                *b += a;
            }
        }
        self.slots[at] = Shared::from(data);
        self.steps[lane as usize] += 1;
        if self.steps[lane as usize] < self.total_steps() {
            return Ok(Some(self.send(lane, step + 1)));
        }
        self.open -= 1;
        Ok((self.open == 0).then(|| RingStep::Done(Sum::new(std::mem::take(&mut self.slots)))))
    }
}

#[cfg(test)]
mod tests;
