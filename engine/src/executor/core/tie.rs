//! Tied embeddings on the executor (`model.tie_word_embeddings`, `brigade_stages::stage::tie`):
//! at the step's first optimizer update, after every replica all-reduce and before clipping,
//! the embedding's and the head's gradients of the shared weight are summed and both copies
//! take the sum. A rank holding both adds them; otherwise the two ranks holding them (in this
//! replica) run a two-member ring all-reduce. Either way the sum is `embedding + head` for
//! every element (addition commutes), so all copies, splits and the reference agree to the bit.

use super::{Action, ExecError, Executor, Reducing};

/// Where this rank's replica keeps the two tied copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieRing {
    /// The ranks holding the embedding and the head (the same rank: no all-reduce).
    pub ranks: [usize; 2],
    /// The id its segments travel under: two past the last chunk (one past: the norm's ring).
    pub id: usize,
}

impl Executor {
    /// Sums the tied copies' gradients once a step; returns the all-reduce this needs when the
    /// other copy is on another rank (the update runs again once it is done).
    pub(super) fn tie_once(&mut self) -> Result<Option<Action>, ExecError> {
        let Some(ring) = self.tie.clone() else {
            return Ok(None);
        };
        if self.tied {
            return Ok(None);
        }
        let mut held: Vec<(usize, usize)> = Vec::new();
        for (&chunk, stage) in &self.stages {
            held.extend(stage.tied_layers_held().into_iter().map(|l| (l, chunk)));
        }
        held.sort_unstable();
        match held[..] {
            [] => {
                self.tied = true;
                Ok(None)
            }
            [(embedding, ce), (head, ch)] => {
                let e = self.stages.get_mut(&ce).expect("held").tied_grad(embedding);
                let h = self.stages.get_mut(&ch).expect("held").tied_grad(head);
                let sum: Vec<f32> = e.iter().zip(&h).map(|(a, b)| a + b).collect();
                self.stages
                    .get_mut(&ce)
                    .expect("held")
                    .set_tied_grad(embedding, &sum);
                self.stages
                    .get_mut(&ch)
                    .expect("held")
                    .set_tied_grad(head, &sum);
                self.tied = true;
                Ok(None)
            }
            [(layer, chunk)] => {
                let data = self.stages.get_mut(&chunk).expect("held").tied_grad(layer);
                let me =
                    ring.ranks
                        .iter()
                        .position(|&r| r == self.rank)
                        .ok_or(ExecError::Schedule {
                            rank: self.rank,
                            instr: self.list[self.pc],
                            why: "holds a tied layer but is not in the tie's ring",
                        })?;
                self.reducing = Some(Reducing::Tie {
                    chunk,
                    layer,
                    start: self.tracer.now(),
                });
                Ok(Some(Action::AllReduce {
                    chunk: ring.id,
                    ring: ring.ranks.to_vec(),
                    me,
                    data,
                }))
            }
            _ => unreachable!("a tie joins two layers"),
        }
    }

    /// The tie's all-reduce is done: `data` is the summed gradient.
    pub(super) fn tie_reduced(&mut self, chunk: usize, layer: usize, data: &[f32]) {
        if let Some(stage) = self.stages.get_mut(&chunk) {
            stage.set_tied_grad(layer, data);
        }
        self.tied = true;
    }
}
