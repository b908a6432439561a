//! How a rank's executor fails: out-of-step messages, a stage error, data it cannot read, a
//! checkpoint it cannot take. Never a panic.

use crate::schedule::Instr;
use brigade_stages::StageError;
use brigade_stages::codec::Kind;

/// A message or instruction out of step with the schedule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExecError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(
        "rank {rank}: received {kind:?} on edge {edge} for step {step}, micro-batch {microbatch}, which the schedule does not expect now (at step {current})"
    )]
    Unexpected {
        rank: usize,
        edge: u32,
        kind: Kind,
        step: u64,
        microbatch: u64,
        current: u64,
    },
    #[error("rank {rank}: cannot take a checkpoint: {why}")]
    Checkpoint { rank: usize, why: String },
    #[error(
        "rank {rank}: received {kind:?} on edge {edge} for step {step}, micro-batch {microbatch} twice"
    )]
    Duplicate {
        rank: usize,
        edge: u32,
        kind: Kind,
        step: u64,
        microbatch: u64,
    },
    #[error("rank {rank}: cannot read the data of step {step}, micro-batch {microbatch}: {why}")]
    Data {
        rank: usize,
        step: u64,
        microbatch: u64,
        why: String,
    },
    #[error("rank {rank}: the schedule is inconsistent with the plan at {instr}: {why}")]
    Schedule {
        rank: usize,
        instr: Instr,
        why: &'static str,
    },
}
