//! Ring all-reduce (reduce-scatter, then all-gather) as a pure state machine: it is given
//! received segments and says what to send next; the driver moves the bytes. D members in a
//! ring, member i sends to i+1 and receives from i−1; the buffer is cut into D segments.
//!
//! ```text
//! reduce-scatter, step s = 0..D−2:  send segment (i − s) mod D,  add the received (i − s − 1)
//! all-gather,     step s = D−1..:   send segment (i + 1 − s') mod D (s' = s − D + 1),
//!                                    copy the received (i − s') mod D
//! ```
//!
//! After reduce-scatter member i holds the full sum of segment (i + 1) mod D; all-gather copies
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

/// What the machine wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum RingStep {
    /// Send `data` to the next member, tagged `lane` and `step`.
    Send {
        lane: u32,
        step: u32,
        data: Vec<f32>,
    },
    /// Every segment is reduced: the buffer.
    Done(Vec<f32>),
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
#[derive(Debug)]
pub struct Ring {
    members: usize,
    me: usize,
    data: Vec<f32>,
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
        let mut ring = Ring {
            members,
            me,
            data,
            steps: vec![0; lanes],
            open: lanes,
            direct: algo == Algo::Direct,
        };
        let first = if members == 1 {
            vec![RingStep::Done(std::mem::take(&mut ring.data))]
        } else {
            (0..lanes as u32).map(|l| ring.send(l, 0)).collect()
        };
        (ring, first)
    }

    fn total_steps(&self) -> u32 {
        if self.direct {
            1
        } else {
            2 * (self.members as u32 - 1)
        }
    }

    /// Segment `k` of lane `lane`.
    fn segment(&self, lane: u32, k: usize) -> std::ops::Range<usize> {
        let (n, lanes, d) = (self.data.len(), self.steps.len(), self.members);
        let l = lane as usize;
        let (from, to) = (l * n / lanes, (l + 1) * n / lanes);
        let m = to - from;
        (from + k * m / d)..(from + (k + 1) * m / d)
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
        let data = if self.direct {
            self.data.clone()
        } else {
            self.data[self.segment(lane, self.sent_segment(step))].to_vec()
        };
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

    /// The previous member's segment of `lane` and `step` arrived: the lane's next send,
    /// the buffer when every lane is finished, or nothing while other lanes are not.
    pub fn receive(
        &mut self,
        lane: u32,
        step: u32,
        data: &[f32],
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
        let d = self.members;
        // The previous member sent at this step the segment one below ours (a swap: all).
        let range = if self.direct {
            0..self.data.len()
        } else {
            self.segment(lane, (self.sent_segment(step) + d - 1) % d)
        };
        if data.len() != range.len() {
            return Err(RingError(format!(
                "segment of {} values at step {step}, expected {}",
                data.len(),
                range.len()
            )));
        }
        if self.direct || (step as usize) < d - 1 {
            for (a, b) in self.data[range].iter_mut().zip(data) {
                *a += b;
            }
        } else {
            self.data[range].copy_from_slice(data);
        }
        self.steps[lane as usize] += 1;
        if self.steps[lane as usize] < self.total_steps() {
            return Ok(Some(self.send(lane, step + 1)));
        }
        self.open -= 1;
        Ok((self.open == 0).then(|| RingStep::Done(std::mem::take(&mut self.data))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `members` machines against each other in one lane, delivering in lockstep.
    fn run(buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        run_with(Algo::Ring, 1, buffers)
    }

    /// Runs `members` machines over `lanes` lanes, delivering the sends in rounds, the lanes
    /// of a round in reverse order.
    fn run_with(algo: Algo, lanes: usize, buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let d = buffers.len();
        let mut rings = Vec::new();
        let mut outbox: Vec<Vec<RingStep>> = Vec::new();
        for (i, b) in buffers.into_iter().enumerate() {
            let (r, first) = Ring::start_with(algo, d, i, b, lanes);
            rings.push(r);
            outbox.push(first);
        }
        let mut done = vec![None; d];
        while done.iter().any(Option::is_none) {
            let sends: Vec<Vec<RingStep>> = outbox.iter_mut().map(std::mem::take).collect();
            assert!(sends.iter().any(|s| !s.is_empty()), "stuck");
            for (i, s) in sends.into_iter().enumerate() {
                for step in s.into_iter().rev() {
                    match step {
                        RingStep::Send { lane, step, data } => {
                            let next = (i + 1) % d;
                            match rings[next].receive(lane, step, &data).unwrap() {
                                Some(RingStep::Done(v)) => done[next] = Some(v),
                                Some(other) => outbox[next].push(other),
                                None => {}
                            }
                        }
                        RingStep::Done(v) => done[i] = Some(v),
                    }
                }
            }
        }
        done.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn every_member_ends_with_the_sum() {
        for d in 1..=5 {
            for (n, lanes) in [(0, 1), (1, 1), (3, 1), (7, 1), (16, 1), (16, 2), (30, 3)] {
                let buffers: Vec<Vec<f32>> = (0..d)
                    .map(|i| (0..n).map(|j| (i * 10 + j) as f32).collect())
                    .collect();
                let want: Vec<f32> = (0..n)
                    .map(|j| (0..d).map(|i| (i * 10 + j) as f32).sum())
                    .collect();
                for got in run_with(Algo::Ring, lanes, buffers) {
                    assert_eq!(got, want, "{d} members, {n} values, {lanes} lanes");
                }
            }
        }
    }

    #[test]
    fn two_members_swapping_end_with_the_same_bits_as_the_ring() {
        // Values whose sums round: the swap adds a + b where the ring adds a + b or b + a.
        let a: Vec<f32> = (0..12).map(|j| 0.1 + j as f32 / 3.0).collect();
        let b: Vec<f32> = (0..12).map(|j| 1e7 - j as f32 * 0.7).collect();
        let swapped = run_with(Algo::Direct, 1, vec![a.clone(), b.clone()]);
        let ringed = run(vec![a.clone(), b.clone()]);
        let laned = run_with(Algo::Ring, 3, vec![a, b]);
        for got in swapped.iter().chain(&ringed).chain(&laned) {
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                swapped[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_algorithm_fits_the_shape() {
        assert_eq!(Algo::choose(4096, 2), Algo::Direct);
        assert_eq!(Algo::choose(DIRECT_MAX_BYTES, 2), Algo::Direct);
        assert_eq!(Algo::choose(DIRECT_MAX_BYTES + 4, 2), Algo::Ring);
        assert_eq!(Algo::choose(4096, 3), Algo::Ring);
    }

    #[test]
    fn lanes_keep_segments_within_the_limit() {
        for (algo, len, members, segment, want) in [
            (Algo::Direct, 1 << 30, 2, 4, 1),
            (Algo::Ring, 0, 2, 4, 1),
            (Algo::Ring, 8, 2, 4, 1),
            (Algo::Ring, 9, 2, 4, 2),
            (Algo::Ring, 24, 3, 4, 2),
            (Algo::Ring, 25 << 18, 2, SEGMENT_VALUES, 13),
            (Algo::Ring, usize::MAX / 2, 2, 1, MAX_LANES),
        ] {
            assert_eq!(
                algo.lanes(len, members, segment),
                want,
                "{algo:?}, {len} values, {members} members, segments of {segment}"
            );
        }
    }

    #[test]
    fn a_swap_is_one_message_of_the_whole_buffer() {
        let (mut r, first) = Ring::start_with(Algo::Direct, 2, 1, vec![1.0, 2.0], 1);
        assert_eq!(
            first,
            vec![RingStep::Send {
                lane: 0,
                step: 0,
                data: vec![1.0, 2.0]
            }]
        );
        assert!(r.receive(0, 0, &[1.0]).is_err());
        assert_eq!(
            r.receive(0, 0, &[3.0, 4.0]),
            Ok(Some(RingStep::Done(vec![4.0, 6.0])))
        );
    }

    #[test]
    fn the_schedule_of_three_members() {
        // Member 0 of 3 sends segments 0, 2 (reduce-scatter), then 1, 0 (all-gather).
        let (r, first) = Ring::start(3, 0, vec![1.0, 2.0, 3.0]);
        assert_eq!(
            first,
            RingStep::Send {
                lane: 0,
                step: 0,
                data: vec![1.0]
            }
        );
        assert_eq!(
            (0..4).map(|s| r.sent_segment(s)).collect::<Vec<_>>(),
            vec![0, 2, 1, 0]
        );
    }

    #[test]
    fn each_lane_is_a_ring_of_its_own() {
        // Two lanes of 4 values over two members: lane 1 is values 4..8, member 0 sends its
        // first half first; lane 1 finishing before lane 0 leaves the buffer unfinished.
        let (mut r, first) =
            Ring::start_with(Algo::Ring, 2, 0, (0..8).map(|v| v as f32).collect(), 2);
        assert_eq!(
            first[1],
            RingStep::Send {
                lane: 1,
                step: 0,
                data: vec![4.0, 5.0]
            }
        );
        let next = r.receive(1, 0, &[10.0, 10.0]).unwrap();
        assert_eq!(
            next,
            Some(RingStep::Send {
                lane: 1,
                step: 1,
                data: vec![16.0, 17.0]
            })
        );
        assert_eq!(r.receive(1, 1, &[1.0, 1.0]), Ok(None));
        assert!(r.receive(1, 1, &[1.0, 1.0]).is_err(), "lane 1 is finished");
        assert!(r.receive(2, 0, &[1.0, 1.0]).is_err(), "there is no lane 2");
        assert_eq!(r.waiting_for(0), 0);
    }

    #[test]
    fn wrong_steps_and_sizes_are_errors() {
        let (mut r, _) = Ring::start(2, 0, vec![1.0, 2.0]);
        assert!(r.receive(0, 1, &[1.0]).is_err());
        assert!(r.receive(0, 0, &[1.0, 2.0]).is_err());
        assert!(r.receive(0, 0, &[1.0]).is_ok());
    }
}
