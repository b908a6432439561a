//! Interleaved 1F1B (Narayanan et al., 2021; Megatron-LM's
//! `forward_backward_pipelining_with_interleaving`, PyTorch's `ScheduleInterleaved1F1B`).
//!
//! The model is cut into K·v chunks and rank r holds the v chunks r, r+K, …, so a micro-batch
//! visits every rank v times. Each rank runs M·v *virtual* micro-batches: in groups of K
//! micro-batches, first through its first chunk, then through its second, …; backwards in the
//! same groups, last chunk first. Rank r warms up with `2(K−r−1) + (v−1)K` forwards (all of them
//! when M = K), then alternates one forward and one backward, then drains. The fill and drain
//! are made of chunk-sized slots, 1/v of a stage, so the bubble shrinks by v: (K−1)/(v·M + K−1)
//! of the step instead of (K−1)/(M + K−1). Requires M to be a multiple of K.
//!
//! K = 2 ranks, v = 2 chunks each (rank 0: chunks 0 and 2, rank 1: chunks 1 and 3), M = 4;
//! a chunk's forward takes one column, its backward two (digits: forward of micro-batch i,
//! letters: backward, a = micro-batch 0), one row per chunk, from the simulator — 27 columns
//! where 1F1B on two whole stages takes 30:
//!
//! ```text
//! rank 0 c0  01..2...3...aa.bb......ccdd
//! rank 1 c1  .01......2aa3bb......ccdd..
//! rank 0 c2  ..01..aa.bb2..3...cc.dd....
//! rank 1 c3  ...0aa1bb......2cc3dd......
//! ```
//! (Literal tables in the tests here and in `sim/tests.rs`.)

use super::{ChunkSlot, Instr, Needs, backward, forward};

/// What this schedule needs: v chunks per rank, round robin (2 unless written), M a multiple
/// of K; not exact on CUDA (on an H200 its losses differed from run to run, docs/gpu.md).
pub(crate) const NEEDS: Needs = Needs {
    splits_weight_grads: false,
    batches_weight_grads: true,
    round_robin_chunks: true,
    default_chunks_per_rank: 2,
    microbatches_multiple_of_ranks: true,
    exact_on_cuda: false,
};

/// Rank `slots[0].chunk`'s list: `slots` are its chunks in chunk order (chunk j·K + r), K =
/// `ranks`, M = `microbatches` (a multiple of K).
pub fn interleaved_1f1b(slots: &[ChunkSlot], ranks: usize, microbatches: usize) -> Vec<Instr> {
    let (k, v, m) = (ranks, slots.len(), microbatches);
    assert!(
        v > 0 && k > 0 && m.is_multiple_of(k),
        "interleaved 1F1B needs micro-batches ({m}) to be a multiple of the ranks ({k})"
    );
    let rank = slots[0].chunk as usize % k;
    let total = m * v;
    let warmup = if m == k {
        total
    } else {
        (2 * (k - rank - 1) + (v - 1) * k).min(total)
    };
    // Virtual micro-batch i: which of the rank's chunks, and which micro-batch.
    let mb = |i: usize| ((i / (k * v)) * k + i % k) as u32;
    let fwd = |i: usize| (slots[(i % (k * v)) / k], mb(i));
    let bwd = |i: usize| (slots[v - 1 - (i % (k * v)) / k], mb(i));
    let mut out = Vec::with_capacity(6 * total + v);
    for i in 0..warmup {
        let (slot, mb) = fwd(i);
        forward(&mut out, slot, mb);
    }
    for i in 0..total - warmup {
        let (slot, mb) = fwd(i + warmup);
        forward(&mut out, slot, mb);
        let (slot, mb) = bwd(i);
        backward(&mut out, slot, mb);
    }
    for i in total - warmup..total {
        let (slot, mb) = bwd(i);
        backward(&mut out, slot, mb);
    }
    for slot in slots {
        out.push(Instr::OptimizerStep { chunk: slot.chunk });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScheduleKind;
    use crate::chain_schedule;

    /// Compute instructions as `F<mb>c<chunk>` / `B<mb>c<chunk>`.
    fn order(list: &[Instr]) -> String {
        list.iter()
            .filter_map(|i| match *i {
                Instr::Forward { chunk, mb } => Some(format!("F{mb}c{chunk}")),
                Instr::Backward { chunk, mb } => Some(format!("B{mb}c{chunk}")),
                Instr::OptimizerStep { chunk } => Some(format!("S{chunk}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn literal_compute_orders() {
        // K = 2, v = 2, M = 4: chunks 0, 2 on rank 0 and 1, 3 on rank 1.
        let lists = chain_schedule(ScheduleKind::Interleaved1F1B, 2, 4, 4);
        assert_eq!(
            order(&lists[0]),
            "F0c0 F1c0 F0c2 F1c2 F2c0 B0c2 F3c0 B1c2 F2c2 B0c0 F3c2 B1c0 B2c2 B3c2 B2c0 B3c0 S0 S2"
        );
        assert_eq!(
            order(&lists[1]),
            "F0c1 F1c1 F0c3 B0c3 F1c3 B1c3 F2c1 B0c1 F3c1 B1c1 F2c3 B2c3 F3c3 B3c3 B2c1 B3c1 S1 S3"
        );
        // M = K: everything warms up (Megatron's special case), GPipe-like per chunk group.
        let lists = chain_schedule(ScheduleKind::Interleaved1F1B, 2, 4, 2);
        assert_eq!(
            order(&lists[1]),
            "F0c1 F1c1 F0c3 F1c3 B0c3 B1c3 B0c1 B1c1 S1 S3"
        );
    }

    #[test]
    fn messages_follow_the_chunks() {
        // Rank 1's chunk 1 receives on edge 0 and sends on edge 1; its chunk 3 receives on
        // edge 2 and is the last chunk.
        let lists = chain_schedule(ScheduleKind::Interleaved1F1B, 2, 4, 2);
        assert_eq!(
            &lists[1][..4],
            &[
                Instr::RecvAct { edge: 0, mb: 0 },
                Instr::Forward { chunk: 1, mb: 0 },
                Instr::SendAct { edge: 1, mb: 0 },
                Instr::RecvAct { edge: 0, mb: 1 },
            ]
        );
    }

    #[test]
    fn every_chunk_runs_every_microbatch_once_each_way() {
        for (k, v, m) in [(2, 2, 4), (4, 2, 8), (2, 3, 6), (4, 3, 4), (3, 2, 9)] {
            let lists = chain_schedule(ScheduleKind::Interleaved1F1B, k, k * v, m);
            for (r, list) in lists.iter().enumerate() {
                for c in (r..k * v).step_by(k) {
                    for mb in 0..m as u32 {
                        let f = list.iter().position(|i| {
                            *i == Instr::Forward {
                                chunk: c as u32,
                                mb,
                            }
                        });
                        let b = list.iter().position(|i| {
                            *i == Instr::Backward {
                                chunk: c as u32,
                                mb,
                            }
                        });
                        assert!(f.is_some() && f < b, "K={k} v={v} M={m} chunk {c} mb {mb}");
                    }
                }
            }
        }
    }
}
