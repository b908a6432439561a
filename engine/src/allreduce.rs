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

/// One member's all-reduce of one buffer.
#[derive(Debug)]
pub struct Ring {
    members: usize,
    me: usize,
    data: Vec<f32>,
    /// The step whose segment this member waits for.
    step: u32,
}

impl Ring {
    /// Member `me` of `members` starts reducing `data`; returns the machine and its first
    /// action (a send, or the buffer itself when alone).
    pub fn start(members: usize, me: usize, data: Vec<f32>) -> (Ring, RingStep) {
        assert!(me < members, "member {me} of {members}");
        let ring = Ring {
            members,
            me,
            data,
            step: 0,
        };
        let first = if members == 1 {
            RingStep::Done(ring.data.clone())
        } else {
            ring.send(0)
        };
        (ring, first)
    }

    fn steps(&self) -> u32 {
        2 * (self.members as u32 - 1)
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
        // The previous member sent at this step the segment one below ours.
        let k = (self.sent_segment(step) + d - 1) % d;
        let range = self.segment(k);
        if data.len() != range.len() {
            return Err(RingError(format!(
                "segment of {} values at step {step}, expected {}",
                data.len(),
                range.len()
            )));
        }
        if (step as usize) < d - 1 {
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
        let d = buffers.len();
        let mut rings = Vec::new();
        let mut outbox: Vec<Option<RingStep>> = Vec::new();
        for (i, b) in buffers.into_iter().enumerate() {
            let (r, first) = Ring::start(d, i, b);
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
