//! The registry of schedules: their names, what each needs from the rest of brigade, and the
//! instruction lists each gives a rank. Each match here is exhaustive, so a new schedule is
//! refused by the compiler until it is listed everywhere it must be; its needs are literal data
//! in its own file (`NEEDS`), so nothing outside this crate tests a schedule's identity.

use crate::{ChunkSlot, Instr, Needs};
use crate::{gpipe, interleaved, one_f_one_b, zb_h1};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Fill-drain: all forwards, then all backwards (GPipe).
    Gpipe,
    /// One-forward-one-backward with a flush at the step's end (PipeDream-Flush).
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// Megatron's interleaved 1F1B: each rank holds several non-adjacent chunks.
    #[serde(rename = "interleaved-1f1b")]
    Interleaved1F1B,
    /// Zero Bubble H1: 1F1B with the backward split into input (B) and weight (W) gradients,
    /// W deferred into the cool-down bubble.
    #[serde(rename = "zb-h1")]
    ZbH1,
}

impl ScheduleKind {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Gpipe => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Interleaved1F1B => "interleaved-1f1b",
            ScheduleKind::ZbH1 => "zb-h1",
        }
    }

    /// Every schedule, in the order `plan` compares them.
    pub const ALL: [ScheduleKind; 4] = [
        ScheduleKind::Gpipe,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved1F1B,
        ScheduleKind::ZbH1,
    ];

    /// The schedule named `name` (as written in a topology or a job plan).
    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        ScheduleKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What this schedule needs, as its own file declares it.
    pub fn needs(self) -> Needs {
        match self {
            ScheduleKind::Gpipe => gpipe::NEEDS,
            ScheduleKind::OneFOneB => one_f_one_b::NEEDS,
            ScheduleKind::Interleaved1F1B => interleaved::NEEDS,
            ScheduleKind::ZbH1 => zb_h1::NEEDS,
        }
    }
}

/// The instruction list of one rank for one step of `kind`: `slots` are the chunks it holds,
/// in chunk order, of a pipeline of `ranks` ranks. GPipe, 1F1B and ZB-H1 give a rank one
/// chunk; interleaved 1F1B gives rank r the chunks r, r + ranks, ….
pub fn rank_schedule(
    kind: ScheduleKind,
    slots: &[ChunkSlot],
    ranks: usize,
    microbatches: usize,
) -> Vec<Instr> {
    let per_chunk = |list: fn(ChunkSlot, usize) -> Vec<Instr>| {
        slots.iter().flat_map(|&s| list(s, microbatches)).collect()
    };
    match kind {
        ScheduleKind::Gpipe => per_chunk(gpipe::gpipe),
        ScheduleKind::OneFOneB => per_chunk(one_f_one_b::one_f_one_b),
        ScheduleKind::Interleaved1F1B => interleaved::interleaved_1f1b(slots, ranks, microbatches),
        ScheduleKind::ZbH1 => per_chunk(zb_h1::zb_h1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ScheduleKind::ALL {
            assert_eq!(ScheduleKind::from_name(k.name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert_eq!(ScheduleKind::from_name("zb-h2"), None);
    }

    #[test]
    fn needs_agree_with_the_lists() {
        // A schedule declares a W split exactly when its lists hold `BackwardWeight`, and
        // never batches weight gradients it runs per micro-batch.
        for k in ScheduleKind::ALL {
            let n = k.needs();
            let (ranks, chunks) = (2, 2 * n.default_chunks_per_rank);
            let splits = crate::chain_schedule(k, ranks, chunks, 4)
                .iter()
                .flatten()
                .any(|i| matches!(i, Instr::BackwardWeight { .. }));
            assert_eq!(n.splits_weight_grads, splits, "{}", k.name());
            assert!(!(n.splits_weight_grads && n.batches_weight_grads));
            assert!(n.default_chunks_per_rank == 1 || n.round_robin_chunks);
        }
    }
}
