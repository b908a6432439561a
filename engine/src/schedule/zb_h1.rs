//! ZB-H1 (Qi et al., 2023, "Zero Bubble Pipeline Parallelism", the schedule with 1F1B's memory):
//! the backward is split into **B** — the gradient of the chunk's input, which the previous
//! rank waits for — and **W** — the weight gradients, which nobody waits for. The chunk runs
//! 1F1B's order with B in place of the whole backward and each micro-batch's W right after its
//! B, except in the cool-down: there a rank keeps sending input gradients upstream back to back
//! (B, B, …) and puts the W's into the time it would otherwise wait, all before the optimizer
//! step. The cool-down's critical path is then made of B's only, which shortens the drain by
//! about (K−1)·W; peak memory stays 1F1B's (K−k micro-batches), since no forward runs after
//! the cool-down starts.
//!
//! K = 3 chunks, M = 4, F = B = W = one slot (digits: F of micro-batch i; lower case: B;
//! upper case: W, A = micro-batch 0):
//!
//! ```text
//! chunk 0  012...a3.b..cdABCD
//! chunk 1  .01..a2Ab3Bc.dCD..
//! chunk 2  ..0aA1bB2cC3dD....
//! ```
//! (Literal tables in the tests.)

use super::{ChunkSlot, Instr, backward, forward};

/// The chunk's instructions: 1F1B's `w = min(K−k−1, M)` warm-up forwards, then F, B, W per
/// micro-batch, then the `w` cool-down B's, then their W's, then the optimizer step.
pub fn zb_h1(slot: ChunkSlot, microbatches: usize) -> Vec<Instr> {
    let m = microbatches as u32;
    let warmup = (slot.depth - slot.position - 1).min(microbatches) as u32;
    let w = |mb| Instr::BackwardWeight {
        chunk: slot.chunk,
        mb,
    };
    let mut out = Vec::with_capacity(7 * microbatches + 1);
    for mb in 0..warmup {
        forward(&mut out, slot, mb);
    }
    for i in 0..m - warmup {
        forward(&mut out, slot, warmup + i);
        backward(&mut out, slot, i);
        out.push(w(i));
    }
    for mb in m - warmup..m {
        backward(&mut out, slot, mb);
    }
    for mb in m - warmup..m {
        out.push(w(mb));
    }
    out.push(Instr::OptimizerStep { chunk: slot.chunk });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::compute_order;

    #[test]
    fn literal_instruction_lists() {
        use Instr::*;
        // K = 2, M = 2; edge 0 joins chunk 0 to chunk 1.
        assert_eq!(
            zb_h1(ChunkSlot::chain(1, 2), 2),
            vec![
                RecvAct { edge: 0, mb: 0 },
                Forward { chunk: 1, mb: 0 },
                Backward { chunk: 1, mb: 0 },
                SendGrad { edge: 0, mb: 0 },
                BackwardWeight { chunk: 1, mb: 0 },
                RecvAct { edge: 0, mb: 1 },
                Forward { chunk: 1, mb: 1 },
                Backward { chunk: 1, mb: 1 },
                SendGrad { edge: 0, mb: 1 },
                BackwardWeight { chunk: 1, mb: 1 },
                OptimizerStep { chunk: 1 },
            ]
        );
        let order = |k, m| compute_order(&zb_h1(ChunkSlot::chain(k, 3), m));
        assert_eq!(order(0, 4), "F0 F1 F2 B0 W0 F3 B1 W1 B2 B3 W2 W3 step");
        assert_eq!(order(1, 4), "F0 F1 B0 W0 F2 B1 W1 F3 B2 W2 B3 W3 step");
        assert_eq!(order(2, 4), "F0 B0 W0 F1 B1 W1 F2 B2 W2 F3 B3 W3 step");
        // Fewer micro-batches than warm-up slots: all forwards, then B's, then W's.
        assert_eq!(order(0, 1), "F0 B0 W0 step");
    }
}
