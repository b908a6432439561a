//! brigade's schedules and simulator, pure: no burn, nothing of brigade's own below it (the
//! planner, the stages and the engine sit on top; docs/decisions/0014-pure-crates.md).
//!
//! Pipeline schedules as data: a pure function gives each rank its instruction list for one
//! training step. The executor runs the list; the simulator times it; tests compare it with
//! literal tables.
//!
//! Instructions speak the plan's words, in the manner of PyTorch's `_Action`: a compute
//! instruction names its **chunk** (a contiguous range of layers) and micro-batch; a send or
//! receive names an **edge** of the plan (producer chunk → consumer chunk) and a micro-batch.
//! Activations flow along an edge, gradients flow back along it. Which rank holds a chunk — and
//! so which process a message goes to — is the plan's business, not the schedule's.
//!
//! A schedule sees one chunk through a [`ChunkSlot`]: its position in the pipeline (how many
//! chunks come before it) and the edges it receives from and sends to. The first chunk reads its
//! input from the data, the last computes the loss instead of receiving a gradient.
//!
//! GPipe (fill–drain), K = 4 chunks, M = 4 micro-batches, forward = 1 slot, backward = 1 slot
//! (digits: forward of micro-batch i; letters: backward, a = micro-batch 0):
//!
//! ```text
//! chunk 0  0123......abcd
//! chunk 1  .0123....abcd.
//! chunk 2  ..0123..abcd..
//! chunk 3  ...0123abcd...
//! ```
//!
//! 1F1B (PipeDream-Flush): chunk k runs K−k−1 warm-up forwards, then alternates one forward
//! and one backward, then drains. Same bubble, but at most K−k micro-batches alive (GPipe: M):
//!
//! ```text
//! chunk 0  0123...a.b.c.d
//! chunk 1  .012..a3b.c.d.
//! chunk 2  ..01.a2b3c.d..
//! chunk 3  ...0a1b2c3d...
//! ```

mod eval;
mod gpipe;
mod interleaved;
mod kind;
mod needs;
mod one_f_one_b;
pub mod sim;
mod zb_h1;

use serde::{Deserialize, Serialize};
use std::fmt;

pub use eval::eval_schedule;
pub use gpipe::gpipe;
pub use interleaved::interleaved_1f1b;
pub use kind::{ScheduleKind, rank_schedule};
pub use needs::Needs;
pub use one_f_one_b::one_f_one_b;
pub use zb_h1::zb_h1;

/// One instruction of a rank's step. Micro-batch indices are 0-based within the step; `chunk`
/// and `edge` are the plan's chunk and edge ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instr {
    /// Wait for micro-batch `mb`'s activation arriving on `edge`.
    RecvAct { edge: u32, mb: u32 },
    /// Run micro-batch `mb` forward through `chunk` (the first chunk reads it from the data).
    Forward { chunk: u32, mb: u32 },
    /// Send micro-batch `mb`'s output along `edge` to its consumer.
    SendAct { edge: u32, mb: u32 },
    /// Wait for the gradient of micro-batch `mb`'s output, coming back along `edge`.
    RecvGrad { edge: u32, mb: u32 },
    /// Backward of micro-batch `mb` through `chunk` (the last chunk computes the loss first).
    /// Under ZB-H1 this is only B: the input gradient (and the gradients of layers whose
    /// backward is not split); the split layers' weight gradients wait for `BackwardWeight`.
    Backward { chunk: u32, mb: u32 },
    /// ZB-H1's W: the weight gradients of micro-batch `mb`'s split layers in `chunk`.
    BackwardWeight { chunk: u32, mb: u32 },
    /// Send the gradient of micro-batch `mb`'s input back along `edge` to its producer.
    SendGrad { edge: u32, mb: u32 },
    /// Apply `chunk`'s accumulated gradients.
    OptimizerStep { chunk: u32 },
    /// Data parallelism: sum `chunk`'s gradients with the other replicas' copies of it (ring
    /// all-reduce over the links; the driver moves the bytes). Just before its optimizer step.
    AllReduce { chunk: u32 },
    /// Evaluation: validation micro-batch `mb` forward through `chunk`, no graph kept (the
    /// first chunk reads it from the validation data, the last scores it). Only in
    /// evaluation lists ([`eval_schedule`]), where `RecvAct`/`SendAct` carry validation
    /// activations.
    EvalForward { chunk: u32, mb: u32 },
}

impl Instr {
    /// The micro-batch this instruction works on (none for the optimizer step).
    pub fn microbatch(&self) -> Option<u32> {
        match *self {
            Instr::RecvAct { mb, .. }
            | Instr::Forward { mb, .. }
            | Instr::SendAct { mb, .. }
            | Instr::RecvGrad { mb, .. }
            | Instr::Backward { mb, .. }
            | Instr::BackwardWeight { mb, .. }
            | Instr::SendGrad { mb, .. }
            | Instr::EvalForward { mb, .. } => Some(mb),
            Instr::OptimizerStep { .. } | Instr::AllReduce { .. } => None,
        }
    }
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Instr::RecvAct { edge, mb } => write!(f, "recv_act{mb}@e{edge}"),
            Instr::Forward { chunk, mb } => write!(f, "F{mb}@c{chunk}"),
            Instr::SendAct { edge, mb } => write!(f, "send_act{mb}@e{edge}"),
            Instr::RecvGrad { edge, mb } => write!(f, "recv_grad{mb}@e{edge}"),
            Instr::Backward { chunk, mb } => write!(f, "B{mb}@c{chunk}"),
            Instr::BackwardWeight { chunk, mb } => write!(f, "W{mb}@c{chunk}"),
            Instr::SendGrad { edge, mb } => write!(f, "send_grad{mb}@e{edge}"),
            Instr::OptimizerStep { chunk } => write!(f, "step@c{chunk}"),
            Instr::EvalForward { chunk, mb } => write!(f, "E{mb}@c{chunk}"),
            Instr::AllReduce { chunk } => write!(f, "allreduce@c{chunk}"),
        }
    }
}

/// What a schedule needs to know about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSlot {
    pub chunk: u32,
    /// Chunks before this one in the pipeline.
    pub position: usize,
    /// Chunks in the pipeline.
    pub depth: usize,
    /// The edges this chunk's inputs arrive on (none for the first chunk; several with skip
    /// connections), in edge order.
    pub input: EdgeSet,
    /// The edges its outputs leave on (none for the last chunk), in edge order.
    pub output: EdgeSet,
}

/// A chunk's edges in one direction: at most [`EdgeSet::MAX`], kept `Copy` like the slot.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct EdgeSet {
    ids: [u32; EdgeSet::MAX],
    len: u8,
}

impl EdgeSet {
    /// The most tensors one chunk may receive or send (the plan refuses more).
    pub const MAX: usize = 16;

    pub fn none() -> EdgeSet {
        EdgeSet::default()
    }

    pub fn one(edge: u32) -> EdgeSet {
        EdgeSet::of(&[edge])
    }

    /// The set of `edges` (in that order); more than [`EdgeSet::MAX`] is a bug in the caller.
    pub fn of(edges: &[u32]) -> EdgeSet {
        assert!(
            edges.len() <= EdgeSet::MAX,
            "more than {} edges",
            EdgeSet::MAX
        );
        let mut s = EdgeSet::none();
        s.ids[..edges.len()].copy_from_slice(edges);
        s.len = edges.len() as u8;
        s
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids[..self.len as usize].iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl From<Option<u32>> for EdgeSet {
    fn from(e: Option<u32>) -> EdgeSet {
        e.map_or(EdgeSet::none(), EdgeSet::one)
    }
}

impl fmt::Debug for EdgeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl ChunkSlot {
    /// Chunk `k` of a chain of `depth` chunks whose edge `e` joins chunk e to chunk e+1 (the
    /// shape every plan has today).
    pub fn chain(k: usize, depth: usize) -> ChunkSlot {
        ChunkSlot {
            chunk: k as u32,
            position: k,
            depth,
            input: (k > 0).then(|| k as u32 - 1).into(),
            output: (k + 1 < depth).then_some(k as u32).into(),
        }
    }
}

/// Instruction lists of every rank of a chain of `chunks` chunks on `ranks` ranks, chunk c on
/// rank c mod `ranks` (for the simulator, tests and the planner's memory model, which plan
/// before a job plan exists).
pub fn chain_schedule(
    kind: ScheduleKind,
    ranks: usize,
    chunks: usize,
    microbatches: usize,
) -> Vec<Vec<Instr>> {
    (0..ranks)
        .map(|r| {
            let slots: Vec<ChunkSlot> = (r..chunks)
                .step_by(ranks)
                .map(|c| ChunkSlot::chain(c, chunks))
                .collect();
            rank_schedule(kind, &slots, ranks, microbatches)
        })
        .collect()
}

/// The most micro-batches `chunk` keeps alive at once in a rank's list: forwards not yet run
/// backward (ZB-H1: not yet through W, whose inputs stay until then).
pub fn peak_live_of(list: &[Instr], chunk: u32) -> usize {
    let splits = list
        .iter()
        .any(|i| matches!(i, Instr::BackwardWeight { chunk: c, .. } if *c == chunk));
    let (mut live, mut peak) = (0usize, 0usize);
    for i in list {
        match *i {
            Instr::Forward { chunk: c, .. } if c == chunk => {
                live += 1;
                peak = peak.max(live);
            }
            Instr::Backward { chunk: c, .. } if c == chunk && !splits => {
                live = live.saturating_sub(1)
            }
            Instr::BackwardWeight { chunk: c, .. } if c == chunk => live = live.saturating_sub(1),
            _ => {}
        }
    }
    peak
}

/// The most micro-batches a list keeps alive at once, all its chunks together (forwards not
/// yet run backward; under ZB-H1 not yet through W): what the planner's memory model charges
/// for activations.
pub fn peak_live(list: &[Instr]) -> usize {
    let splits = list
        .iter()
        .any(|i| matches!(i, Instr::BackwardWeight { .. }));
    let (mut live, mut peak) = (0usize, 0usize);
    for i in list {
        match i {
            Instr::Forward { .. } => {
                live += 1;
                peak = peak.max(live);
            }
            Instr::Backward { .. } if !splits => live = live.saturating_sub(1),
            Instr::BackwardWeight { .. } => live = live.saturating_sub(1),
            _ => {}
        }
    }
    peak
}

/// The forward of `mb` through `slot`'s chunk, with its receive and send.
pub(crate) fn forward(out: &mut Vec<Instr>, slot: ChunkSlot, mb: u32) {
    around(
        out,
        slot,
        mb,
        Instr::Forward {
            chunk: slot.chunk,
            mb,
        },
    );
}

/// `compute` (a forward or an evaluation of `mb`) between the receives of the chunk's inputs
/// and the sends of its outputs, one per edge.
pub(crate) fn around(out: &mut Vec<Instr>, slot: ChunkSlot, mb: u32, compute: Instr) {
    out.extend(slot.input.iter().map(|edge| Instr::RecvAct { edge, mb }));
    out.push(compute);
    out.extend(slot.output.iter().map(|edge| Instr::SendAct { edge, mb }));
}

/// The backward of `mb` through `slot`'s chunk, with its receive and send.
pub(crate) fn backward(out: &mut Vec<Instr>, slot: ChunkSlot, mb: u32) {
    for edge in slot.output.iter() {
        out.push(Instr::RecvGrad { edge, mb });
    }
    out.push(Instr::Backward {
        chunk: slot.chunk,
        mb,
    });
    for edge in slot.input.iter() {
        out.push(Instr::SendGrad { edge, mb });
    }
}

/// `list` with an all-reduce of each chunk's gradients before the optimizer steps, when the
/// job has several replicas (the gradients of every replica's copy of a chunk are summed).
/// Every all-reduce comes before the first optimizer step, so the step's gradients are final
/// on all the rank's chunks when that step starts (`clip_grad_norm` needs all of them).
pub fn with_all_reduce(list: Vec<Instr>, replicas: usize) -> Vec<Instr> {
    if replicas <= 1 {
        return list;
    }
    let reduces: Vec<Instr> = list
        .iter()
        .filter_map(|i| match *i {
            Instr::OptimizerStep { chunk } => Some(Instr::AllReduce { chunk }),
            _ => None,
        })
        .collect();
    let first = list
        .iter()
        .position(|i| matches!(i, Instr::OptimizerStep { .. }))
        .unwrap_or(list.len());
    let mut out = list;
    out.splice(first..first, reduces);
    out
}

/// The compute instructions only, as `F0 F1 B0 ... step` (for tests and logs).
pub fn compute_order(list: &[Instr]) -> String {
    list.iter()
        .filter_map(|i| match *i {
            Instr::Forward { mb, .. } => Some(format!("F{mb}")),
            Instr::Backward { mb, .. } => Some(format!("B{mb}")),
            Instr::BackwardWeight { mb, .. } => Some(format!("W{mb}")),
            Instr::OptimizerStep { .. } => Some("step".to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_live_is_counted_from_the_lists() {
        let peaks = |kind| -> Vec<usize> {
            chain_schedule(kind, 4, 4, 8)
                .iter()
                .map(|l| peak_live(l))
                .collect()
        };
        assert_eq!(peaks(ScheduleKind::Gpipe), vec![8, 8, 8, 8]);
        assert_eq!(
            peaks(ScheduleKind::ZbH1),
            vec![4, 4, 4, 4],
            "1F1B's peak (K), on every rank"
        );
        assert_eq!(peaks(ScheduleKind::OneFOneB), vec![4, 3, 2, 1]);
        assert_eq!(
            peak_live(&one_f_one_b(ChunkSlot::chain(0, 4), 2)),
            2,
            "never more than M"
        );
    }

    #[test]
    fn instructions_round_trip_through_json() {
        let list = gpipe(ChunkSlot::chain(1, 3), 2);
        let json = serde_json::to_string(&list).unwrap();
        assert!(json.contains(r#"{"recv_act":{"edge":0,"mb":0}}"#), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Instr>>(&json).unwrap(), list);
    }

    #[test]
    fn every_all_reduce_precedes_the_first_optimizer_step() {
        let (f, s) = (Instr::Forward { chunk: 0, mb: 0 }, |chunk| {
            Instr::OptimizerStep { chunk }
        });
        let r = |chunk| Instr::AllReduce { chunk };
        assert_eq!(
            with_all_reduce(vec![f, s(0), s(2)], 2),
            vec![f, r(0), r(2), s(0), s(2)]
        );
        assert_eq!(with_all_reduce(vec![f, s(0), s(2)], 1), vec![f, s(0), s(2)]);
    }
}
