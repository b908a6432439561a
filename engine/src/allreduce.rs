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
//! Two members may instead swap whole buffers ([`Algo::Direct`]): one message each way instead
//! of two, the same bytes, and both add `a + b` — the same bits either way round, since IEEE
//! addition commutes. [`Algo::choose`] takes it for small buffers, where the second round
//! trip costs more than the extra additions.

/// What the machine wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum RingStep {
    /// Send `data` to the next member, tagged `step`.
    Send { step: u32, data: Vec<f32> },
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
}

/// One member's all-reduce of one buffer.
#[derive(Debug)]
pub struct Ring {
    members: usize,
    me: usize,
    data: Vec<f32>,
    /// The step whose segment this member waits for.
    step: u32,
    /// [`Algo::Direct`]: one step, the whole buffer.
    direct: bool,
}

impl Ring {
    /// Member `me` of `members` starts reducing `data`; returns the machine and its first
    /// action (a send, or the buffer itself when alone).
    pub fn start(members: usize, me: usize, data: Vec<f32>) -> (Ring, RingStep) {
        Ring::start_with(Algo::Ring, members, me, data)
    }

    /// [`Ring::start`] with the algorithm `algo` ([`Algo::Direct`] needs two members).
    pub fn start_with(algo: Algo, members: usize, me: usize, data: Vec<f32>) -> (Ring, RingStep) {
        assert!(me < members, "member {me} of {members}");
        assert!(
            algo == Algo::Ring || members == 2,
            "a direct swap has two members"
        );
        let ring = Ring {
            members,
            me,
            data,
            step: 0,
            direct: algo == Algo::Direct,
        };
        let first = if members == 1 {
            RingStep::Done(ring.data.clone())
        } else {
            ring.send(0)
        };
        (ring, first)
    }

    fn steps(&self) -> u32 {
        if self.direct {
            1
        } else {
            2 * (self.members as u32 - 1)
        }
    }

    fn segment(&self, k: usize) -> std::ops::Range<usize> {
        let (n, d) = (self.data.len(), self.members);
        (k * n / d)..((k + 1) * n / d)
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

    fn send(&self, step: u32) -> RingStep {
        if self.direct {
            return RingStep::Send {
                step,
                data: self.data.clone(),
            };
        }
        RingStep::Send {
            step,
            data: self.data[self.segment(self.sent_segment(step))].to_vec(),
        }
    }

    /// The step this member waits for.
    pub fn waiting_for(&self) -> u32 {
        self.step
    }

    /// The previous member's segment of `step` arrived.
    pub fn receive(&mut self, step: u32, data: &[f32]) -> Result<RingStep, RingError> {
        if step != self.step || step >= self.steps() {
            return Err(RingError(format!(
                "segment of step {step} while waiting for step {}",
                self.step
            )));
        }
        let d = self.members;
        // The previous member sent at this step the segment one below ours (a swap: all).
        let range = if self.direct {
            0..self.data.len()
        } else {
            self.segment((self.sent_segment(step) + d - 1) % d)
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
        self.step += 1;
        if self.step == self.steps() {
            return Ok(RingStep::Done(std::mem::take(&mut self.data)));
        }
        Ok(self.send(self.step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `members` machines against each other, delivering in lockstep.
    fn run(buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        run_with(Algo::Ring, buffers)
    }

    fn run_with(algo: Algo, buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let d = buffers.len();
        let mut rings = Vec::new();
        let mut outbox: Vec<Option<RingStep>> = Vec::new();
        for (i, b) in buffers.into_iter().enumerate() {
            let (r, first) = Ring::start_with(algo, d, i, b);
            rings.push(r);
            outbox.push(Some(first));
        }
        let mut done = vec![None; d];
        while done.iter().any(Option::is_none) {
            let sends: Vec<Option<RingStep>> = outbox.iter_mut().map(Option::take).collect();
            for (i, s) in sends.into_iter().enumerate() {
                match s {
                    Some(RingStep::Send { step, data }) => {
                        let next = (i + 1) % d;
                        match rings[next].receive(step, &data).unwrap() {
                            RingStep::Done(v) => done[next] = Some(v),
                            other => outbox[next] = Some(other),
                        }
                    }
                    Some(RingStep::Done(v)) => done[i] = Some(v),
                    None => {}
                }
            }
        }
        done.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn every_member_ends_with_the_sum() {
        for d in 1..=5 {
            for n in [0, 1, 3, 7, 16] {
                let buffers: Vec<Vec<f32>> = (0..d)
                    .map(|i| (0..n).map(|j| (i * 10 + j) as f32).collect())
                    .collect();
                let want: Vec<f32> = (0..n)
                    .map(|j| (0..d).map(|i| (i * 10 + j) as f32).sum())
                    .collect();
                for got in run(buffers) {
                    assert_eq!(got, want, "{d} members, {n} values");
                }
            }
        }
    }

    #[test]
    fn two_members_swapping_end_with_the_same_bits_as_the_ring() {
        // Values whose sums round: the swap adds a + b where the ring adds a + b or b + a.
        let a: Vec<f32> = (0..9).map(|j| 0.1 + j as f32 / 3.0).collect();
        let b: Vec<f32> = (0..9).map(|j| 1e7 - j as f32 * 0.7).collect();
        let swapped = run_with(Algo::Direct, vec![a.clone(), b.clone()]);
        let ringed = run(vec![a, b]);
        for got in swapped.iter().chain(&ringed) {
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
    fn a_swap_is_one_message_of_the_whole_buffer() {
        let (mut r, first) = Ring::start_with(Algo::Direct, 2, 1, vec![1.0, 2.0]);
        assert_eq!(
            first,
            RingStep::Send {
                step: 0,
                data: vec![1.0, 2.0]
            }
        );
        assert!(r.receive(0, &[1.0]).is_err());
        assert_eq!(
            r.receive(0, &[3.0, 4.0]),
            Ok(RingStep::Done(vec![4.0, 6.0]))
        );
    }

    #[test]
    fn the_schedule_of_three_members() {
        // Member 0 of 3 sends segments 0, 2 (reduce-scatter), then 1, 0 (all-gather).
        let (r, first) = Ring::start(3, 0, vec![1.0, 2.0, 3.0]);
        assert_eq!(
            first,
            RingStep::Send {
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
    fn wrong_steps_and_sizes_are_errors() {
        let (mut r, _) = Ring::start(2, 0, vec![1.0, 2.0]);
        assert!(r.receive(1, &[1.0]).is_err());
        assert!(r.receive(0, &[1.0, 2.0]).is_err());
        assert!(r.receive(0, &[1.0]).is_ok());
    }
}
