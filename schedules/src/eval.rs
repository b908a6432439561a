//! Evaluation as data: the validation set forward through the pipeline, no backward. Each
//! rank runs its chunks in chunk order, every micro-batch of one chunk before the next
//! chunk, so a rank holding several chunks (interleaved) never waits on a later chunk's input
//! before sending an earlier chunk's output. Sends do not block, so no list waits on a
//! message its peer has not been able to send: the evaluation cannot deadlock.
//!
//! Two ranks, one chunk each, V = 3 validation micro-batches (E: forward with no graph; the
//! last chunk scores its output against the validation targets):
//!
//! ```text
//! chunk 0  E0 E1 E2
//! chunk 1     E0 E1 E2
//! ```

use super::{ChunkSlot, Instr};

/// One rank's evaluation list for its chunks `slots` (any order) and `microbatches`
/// validation micro-batches.
pub fn eval_schedule(slots: &[ChunkSlot], microbatches: usize) -> Vec<Instr> {
    let mut slots = slots.to_vec();
    slots.sort_by_key(|s| s.position);
    let mut out = Vec::new();
    for slot in &slots {
        for mb in 0..microbatches as u32 {
            let compute = Instr::EvalForward {
                chunk: slot.chunk,
                mb,
            };
            super::around(&mut out, *slot, mb, compute);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(chunk: u32, depth: usize) -> ChunkSlot {
        ChunkSlot {
            chunk,
            position: chunk as usize,
            depth,
            input: chunk.checked_sub(1).into(),
            output: ((chunk as usize) + 1 < depth).then_some(chunk).into(),
        }
    }

    #[test]
    fn evaluation_lists_are_chunk_major() {
        use Instr::*;
        assert_eq!(
            eval_schedule(&[slot(0, 2)], 2),
            vec![
                EvalForward { chunk: 0, mb: 0 },
                SendAct { edge: 0, mb: 0 },
                EvalForward { chunk: 0, mb: 1 },
                SendAct { edge: 0, mb: 1 },
            ]
        );
        // Interleaved: rank 0 holds chunks 0 and 2 of 4.
        assert_eq!(
            eval_schedule(&[slot(2, 4), slot(0, 4)], 1),
            vec![
                EvalForward { chunk: 0, mb: 0 },
                SendAct { edge: 0, mb: 0 },
                RecvAct { edge: 1, mb: 0 },
                EvalForward { chunk: 2, mb: 0 },
                SendAct { edge: 2, mb: 0 },
            ]
        );
        assert!(eval_schedule(&[slot(0, 1)], 0).is_empty());
    }
}
