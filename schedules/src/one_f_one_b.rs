//! 1F1B with a flush at the end of the step (PipeDream-Flush; Narayanan et al., 2021; the
//! schedule of Megatron-LM and DeepSpeed's `TrainSchedule`).

use super::{ChunkSlot, Instr, Needs, backward, forward};

/// What this schedule needs (one chunk per rank, the whole backward at once).
pub(crate) const NEEDS: Needs = Needs {
    splits_weight_grads: false,
    batches_weight_grads: true,
    round_robin_chunks: false,
    default_chunks_per_rank: 1,
    microbatches_multiple_of_ranks: false,
    exact_on_cuda: true,
};

/// The chunk's instructions: `w = min(K−k−1, M)` warm-up forwards (k: the chunk's position,
/// K: the pipeline's depth), then forward and backward alternating, then the remaining `w`
/// backwards, then the optimizer step. At most `w + 1 ≤ K−k` micro-batches are alive at once.
pub fn one_f_one_b(slot: ChunkSlot, microbatches: usize) -> Vec<Instr> {
    let m = microbatches as u32;
    let warmup = (slot.depth - slot.position - 1).min(microbatches) as u32;
    let mut out = Vec::with_capacity(6 * microbatches + 1);
    for mb in 0..warmup {
        forward(&mut out, slot, mb);
    }
    for i in 0..m - warmup {
        forward(&mut out, slot, warmup + i);
        backward(&mut out, slot, i);
    }
    for mb in m - warmup..m {
        backward(&mut out, slot, mb);
    }
    out.push(Instr::OptimizerStep { chunk: slot.chunk });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute_order;
    use Instr::*;

    #[test]
    fn literal_instruction_lists() {
        // K = 2, M = 3; edge 0 joins chunk 0 to chunk 1.
        assert_eq!(
            one_f_one_b(ChunkSlot::chain(0, 2), 3),
            vec![
                Forward { chunk: 0, mb: 0 },
                SendAct { edge: 0, mb: 0 },
                Forward { chunk: 0, mb: 1 },
                SendAct { edge: 0, mb: 1 },
                RecvGrad { edge: 0, mb: 0 },
                Backward { chunk: 0, mb: 0 },
                Forward { chunk: 0, mb: 2 },
                SendAct { edge: 0, mb: 2 },
                RecvGrad { edge: 0, mb: 1 },
                Backward { chunk: 0, mb: 1 },
                RecvGrad { edge: 0, mb: 2 },
                Backward { chunk: 0, mb: 2 },
                OptimizerStep { chunk: 0 }
            ]
        );
        assert_eq!(
            one_f_one_b(ChunkSlot::chain(1, 2), 3),
            vec![
                RecvAct { edge: 0, mb: 0 },
                Forward { chunk: 1, mb: 0 },
                Backward { chunk: 1, mb: 0 },
                SendGrad { edge: 0, mb: 0 },
                RecvAct { edge: 0, mb: 1 },
                Forward { chunk: 1, mb: 1 },
                Backward { chunk: 1, mb: 1 },
                SendGrad { edge: 0, mb: 1 },
                RecvAct { edge: 0, mb: 2 },
                Forward { chunk: 1, mb: 2 },
                Backward { chunk: 1, mb: 2 },
                SendGrad { edge: 0, mb: 2 },
                OptimizerStep { chunk: 1 }
            ]
        );
    }

    #[test]
    fn compute_order_k4_m8() {
        let expected = [
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7 step",
            "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7 step",
            "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7 step",
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 step",
        ];
        for (k, e) in expected.iter().enumerate() {
            assert_eq!(
                compute_order(&one_f_one_b(ChunkSlot::chain(k, 4), 8)),
                *e,
                "chunk {k}"
            );
        }
    }

    #[test]
    fn fewer_microbatches_than_stages() {
        assert_eq!(
            compute_order(&one_f_one_b(ChunkSlot::chain(0, 4), 2)),
            "F0 F1 B0 B1 step"
        );
    }
}
