//! GPipe: every forward, then every backward (Huang et al., 2019).

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

/// The chunk's instructions: F0 … F(M−1), B0 … B(M−1), optimizer step. Keeps M micro-batches
/// alive at its peak.
pub fn gpipe(slot: ChunkSlot, microbatches: usize) -> Vec<Instr> {
    let mut out = Vec::with_capacity(6 * microbatches + 1);
    for mb in 0..microbatches as u32 {
        forward(&mut out, slot, mb);
    }
    for mb in 0..microbatches as u32 {
        backward(&mut out, slot, mb);
    }
    out.push(Instr::OptimizerStep { chunk: slot.chunk });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeSet, compute_order};

    #[allow(non_snake_case)]
    mod lit {
        //! Short constructors so the tables below read like the timelines.
        use super::Instr;
        pub fn F(chunk: u32, mb: u32) -> Instr {
            Instr::Forward { chunk, mb }
        }
        pub fn B(chunk: u32, mb: u32) -> Instr {
            Instr::Backward { chunk, mb }
        }
        pub fn RA(edge: u32, mb: u32) -> Instr {
            Instr::RecvAct { edge, mb }
        }
        pub fn SA(edge: u32, mb: u32) -> Instr {
            Instr::SendAct { edge, mb }
        }
        pub fn RG(edge: u32, mb: u32) -> Instr {
            Instr::RecvGrad { edge, mb }
        }
        pub fn SG(edge: u32, mb: u32) -> Instr {
            Instr::SendGrad { edge, mb }
        }
        pub fn STEP(chunk: u32) -> Instr {
            Instr::OptimizerStep { chunk }
        }
    }
    use lit::*;

    #[test]
    fn literal_instruction_lists() {
        let chain = ChunkSlot::chain;
        // K = 3, M = 2: first, middle and last chunk (edge e joins chunk e to chunk e+1).
        assert_eq!(
            gpipe(chain(0, 3), 2),
            vec![
                F(0, 0),
                SA(0, 0),
                F(0, 1),
                SA(0, 1),
                RG(0, 0),
                B(0, 0),
                RG(0, 1),
                B(0, 1),
                STEP(0)
            ]
        );
        assert_eq!(
            gpipe(chain(1, 3), 2),
            vec![
                RA(0, 0),
                F(1, 0),
                SA(1, 0),
                RA(0, 1),
                F(1, 1),
                SA(1, 1),
                RG(1, 0),
                B(1, 0),
                SG(0, 0),
                RG(1, 1),
                B(1, 1),
                SG(0, 1),
                STEP(1)
            ]
        );
        assert_eq!(
            gpipe(chain(2, 3), 2),
            vec![
                RA(1, 0),
                F(2, 0),
                RA(1, 1),
                F(2, 1),
                B(2, 0),
                SG(1, 0),
                B(2, 1),
                SG(1, 1),
                STEP(2)
            ]
        );
        // A single chunk is the reference trainer's order.
        assert_eq!(
            gpipe(chain(0, 1), 2),
            vec![F(0, 0), F(0, 1), B(0, 0), B(0, 1), STEP(0)]
        );
    }

    #[test]
    fn edges_come_from_the_slot_not_from_the_position() {
        // A chunk whose edges are numbered differently (as a plan may number them).
        let slot = ChunkSlot {
            chunk: 7,
            position: 1,
            depth: 2,
            input: EdgeSet::one(4),
            output: EdgeSet::none(),
        };
        assert_eq!(
            gpipe(slot, 1),
            vec![RA(4, 0), F(7, 0), B(7, 0), SG(4, 0), STEP(7)]
        );
    }

    #[test]
    fn compute_order_k4_m8() {
        for k in 0..4 {
            assert_eq!(
                compute_order(&gpipe(ChunkSlot::chain(k, 4), 8)),
                "F0 F1 F2 F3 F4 F5 F6 F7 B0 B1 B2 B3 B4 B5 B6 B7 step"
            );
        }
    }
}
