//! Pipeline schedules as data: a pure function gives each stage its instruction list for one
//! training step. The executor runs the list; the simulator times it; tests compare it with
//! literal tables.
//!
//! Stage k receives activations from k−1 and gradients from k+1; the first stage reads its
//! input from the data, the last computes the loss instead of receiving a gradient.
//!
//! GPipe (fill–drain), K = 4 stages, M = 4 micro-batches, forward = 1 slot, backward = 1 slot
//! (digits: forward of micro-batch i; letters: backward, a = micro-batch 0):
//!
//! ```text
//! stage 0  0123......abcd
//! stage 1  .0123....abcd.
//! stage 2  ..0123..abcd..
//! stage 3  ...0123abcd...
//! ```
//!
//! 1F1B (PipeDream-Flush): stage k runs K−k−1 warm-up forwards, then alternates one forward
//! and one backward, then drains. Same bubble, but at most K−k micro-batches alive (GPipe: M):
//!
//! ```text
//! stage 0  0123...a.b.c.d
//! stage 1  .012..a3b.c.d.
//! stage 2  ..01.a2b3c.d..
//! stage 3  ...0a1b2c3d...
//! ```

mod gpipe;
mod one_f_one_b;

use brigade_partitioner::ScheduleKind;
use serde::Serialize;
use std::fmt;

pub use gpipe::gpipe;
pub use one_f_one_b::one_f_one_b;

/// One instruction of a stage's step. Micro-batch indices are 0-based within the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Instr {
    /// Wait for micro-batch `mb`'s activation from the previous stage.
    RecvAct(u32),
    /// Run micro-batch `mb` forward (the first stage reads it from the data).
    Forward(u32),
    /// Send micro-batch `mb`'s output to the next stage.
    SendAct(u32),
    /// Wait for the gradient of micro-batch `mb`'s output from the next stage.
    RecvGrad(u32),
    /// Backward of micro-batch `mb` (the last stage computes the loss first).
    Backward(u32),
    /// Send the gradient of micro-batch `mb`'s input to the previous stage.
    SendGrad(u32),
    /// Apply the accumulated gradients.
    OptimizerStep,
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instr::RecvAct(m) => write!(f, "recv_act{m}"),
            Instr::Forward(m) => write!(f, "F{m}"),
            Instr::SendAct(m) => write!(f, "send_act{m}"),
            Instr::RecvGrad(m) => write!(f, "recv_grad{m}"),
            Instr::Backward(m) => write!(f, "B{m}"),
            Instr::SendGrad(m) => write!(f, "send_grad{m}"),
            Instr::OptimizerStep => write!(f, "step"),
        }
    }
}

/// Instruction lists of every stage for one step of `kind`.
pub fn schedule(kind: ScheduleKind, stages: usize, microbatches: usize) -> Vec<Vec<Instr>> {
    (0..stages)
        .map(|k| match kind {
            ScheduleKind::Gpipe => gpipe(k, stages, microbatches),
            ScheduleKind::OneFOneB => one_f_one_b(k, stages, microbatches),
        })
        .collect()
}

/// The forward of `mb` on stage `k` of `stages`, with its receive and send.
pub(crate) fn forward(out: &mut Vec<Instr>, k: usize, stages: usize, mb: u32) {
    if k > 0 {
        out.push(Instr::RecvAct(mb));
    }
    out.push(Instr::Forward(mb));
    if k + 1 < stages {
        out.push(Instr::SendAct(mb));
    }
}

/// The backward of `mb` on stage `k` of `stages`, with its receive and send.
pub(crate) fn backward(out: &mut Vec<Instr>, k: usize, stages: usize, mb: u32) {
    if k + 1 < stages {
        out.push(Instr::RecvGrad(mb));
    }
    out.push(Instr::Backward(mb));
    if k > 0 {
        out.push(Instr::SendGrad(mb));
    }
}

/// The compute instructions only, as `F0 F1 B0 ...` (for tests and logs).
pub fn compute_order(list: &[Instr]) -> String {
    list.iter()
        .filter(|i| {
            matches!(
                i,
                Instr::Forward(_) | Instr::Backward(_) | Instr::OptimizerStep
            )
        })
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
