//! ZB-H1 (Qi et al., 2023, "Zero Bubble Pipeline Parallelism": the schedule with 1F1B's peak
//! memory): the backward is split into **B** — the gradient of the chunk's input, which the
//! previous rank waits for — and **W** — the weight gradients, which nobody waits for. The
//! chunk runs 1F1B's order with B in place of the whole backward, and each W a few B's later:
//! chunk k (of K) runs W `k` B's behind, so the last ranks, which every earlier rank's
//! cool-down waits on, send their input gradients back to back and do their W's when nobody
//! needs them any more. The cool-down's critical path is then made of B's only: the bubble is
//! (K−1)(F+B−W) instead of 1F1B's (K−1)(F+B+W). Micro-batches stay alive from F to W, at most
//! (K−k−1) + 1 + k = K on every rank — the peak 1F1B has on its first rank.
//!
//! K = 3 chunks, M = 4, F = B = W = one slot (digits: F of micro-batch i; lower case: B;
//! upper case: W, A = micro-batch 0); 14 slots where 1F1B (B and W together) takes 18:
//!
//! ```text
//! chunk 0  012..aA3bBcCdD
//! chunk 1  .01.a2bA3cBdCD
//! chunk 2  ..0a1b2cA3dBCD
//! ```
//! (From the simulator; literal tables in the tests here and in `sim/tests.rs`.)

use super::{ChunkSlot, Instr, Needs, backward, forward};

/// What this schedule needs (B and W apart, W per micro-batch at its own time).
pub(crate) const NEEDS: Needs = Needs {
    splits_weight_grads: true,
    batches_weight_grads: false,
    round_robin_chunks: false,
    default_chunks_per_rank: 1,
    microbatches_multiple_of_ranks: false,
    exact_on_cuda: true,
};

/// The chunk's instructions: 1F1B's `w = min(K−k−1, M)` warm-up forwards, then F and B
/// alternating and the `w` cool-down B's, each W `k` B's after its own, the rest of the W's
/// at the end, then the optimizer step.
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
    // W runs `lag` B's behind: the later the rank, the more W's it defers, so its B's — which
    // every earlier rank's cool-down waits for — come back to back. Alive (F run, W not yet)
    // stay at most w + 1 + lag = K micro-batches on every rank: 1F1B's peak.
    let lag = slot.position.min(microbatches);
    let mut pending = std::collections::VecDeque::new();
    let mut b = |out: &mut Vec<Instr>, mb: u32| {
        backward(out, slot, mb);
        pending.push_back(mb);
        if pending.len() > lag {
            out.push(w(pending.pop_front().expect("not empty")));
        }
    };
    for i in 0..m - warmup {
        forward(&mut out, slot, warmup + i);
        b(&mut out, i);
    }
    for mb in m - warmup..m {
        b(&mut out, mb);
    }
    for mb in pending {
        out.push(w(mb));
    }
    out.push(Instr::OptimizerStep { chunk: slot.chunk });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute_order;

    #[test]
    fn literal_instruction_lists() {
        use Instr::*;
        // K = 2, M = 2; edge 0 joins chunk 0 to chunk 1. The last chunk's W runs one B late.
        assert_eq!(
            zb_h1(ChunkSlot::chain(1, 2), 2),
            vec![
                RecvAct { edge: 0, mb: 0 },
                Forward { chunk: 1, mb: 0 },
                Backward { chunk: 1, mb: 0 },
                SendGrad { edge: 0, mb: 0 },
                RecvAct { edge: 0, mb: 1 },
                Forward { chunk: 1, mb: 1 },
                Backward { chunk: 1, mb: 1 },
                SendGrad { edge: 0, mb: 1 },
                BackwardWeight { chunk: 1, mb: 0 },
                BackwardWeight { chunk: 1, mb: 1 },
                OptimizerStep { chunk: 1 },
            ]
        );
        let order = |k, m| compute_order(&zb_h1(ChunkSlot::chain(k, 3), m));
        assert_eq!(order(0, 4), "F0 F1 F2 B0 W0 F3 B1 W1 B2 W2 B3 W3 step");
        assert_eq!(order(1, 4), "F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3 step");
        assert_eq!(order(2, 4), "F0 B0 F1 B1 F2 B2 W0 F3 B3 W1 W2 W3 step");
        // Fewer micro-batches than warm-up slots: all forwards, then B's, then W's.
        assert_eq!(order(0, 1), "F0 B0 W0 step");
    }
}
