//! The schedule simulator: runs every rank's instruction list against per-chunk costs and
//! per-edge link times, as the executors would, and reports the step time, each rank's idle time and
//! peak live micro-batches — or the deadlock, before any process starts.
//!
//! Model: a rank's compute thread runs its list in order; forward, backward and the optimizer
//! step take their cost; a send takes no compute time (the I/O thread does it) but occupies the
//! link for `latency + bytes / bandwidth`, one message at a time, in the order sent; a receive
//! waits until the message has arrived.

mod gantt;
#[cfg(test)]
mod tests;

use crate::Instr;
use serde::Serialize;
use std::collections::HashMap;

pub use gantt::{gantt, gantt_by_chunk};

/// Costs of one chunk, per micro-batch, on the device of the rank that holds it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ChunkCost {
    pub forward_ms: f64,
    /// The whole backward (B and W together).
    pub backward_ms: f64,
    /// Under a split schedule (ZB-H1), what a `Backward` costs: B, the backward without the
    /// split layers' weight gradients (used for chunks whose rank runs `BackwardWeight`).
    #[serde(default)]
    pub input_backward_ms: f64,
    /// What a `BackwardWeight` (W) costs.
    #[serde(default)]
    pub weight_ms: f64,
    pub optimizer_ms: f64,
    /// What an `AllReduce` of the chunk's gradients costs with several replicas: a ring moves
    /// 2·(D−1)/D of the gradients' bytes over the link to the next replica, in 2·(D−1) steps.
    #[serde(default)]
    pub allreduce_ms: f64,
}

/// One edge of the plan: the ranks it joins and the time to move one message each way.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EdgeCost {
    /// The rank holding the edge's producer chunk (it sends activations, receives gradients).
    pub producer: usize,
    /// The rank holding the consumer chunk.
    pub consumer: usize,
    /// Time to move one activation from producer to consumer.
    pub act_ms: f64,
    /// Time to move one gradient back.
    pub grad_ms: f64,
}

/// What the simulator charges: compute by chunk, communication by edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimCosts {
    pub chunks: Vec<ChunkCost>,
    pub edges: Vec<EdgeCost>,
}

impl SimCosts {
    /// A chain of `k` chunks, chunk i on rank i, edge i from rank i to rank i+1, with the same
    /// costs everywhere (for tests and examples).
    pub fn uniform_chain(k: usize, forward_ms: f64, backward_ms: f64) -> SimCosts {
        SimCosts {
            chunks: vec![
                ChunkCost {
                    forward_ms,
                    backward_ms,
                    input_backward_ms: backward_ms,
                    weight_ms: 0.0,
                    optimizer_ms: 0.0,
                    allreduce_ms: 0.0,
                };
                k
            ],
            edges: (0..k.saturating_sub(1))
                .map(|i| EdgeCost {
                    producer: i,
                    consumer: i + 1,
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// What one instruction occupied.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub rank: usize,
    pub instr: Instr,
    pub start_ms: f64,
    pub end_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub busy_ms: f64,
    pub idle_ms: f64,
    /// idle / step time.
    pub bubble_fraction: f64,
    pub peak_live_microbatches: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub step_ms: f64,
    /// One report per rank.
    pub stages: Vec<StageReport>,
    /// Compute spans (forward, backward, optimizer), in execution order per rank.
    pub spans: Vec<Span>,
}

/// A schedule that cannot finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("the schedule deadlocks: {}", describe(.waiting))]
    Deadlock { waiting: Vec<(usize, Instr)> },
    #[error(
        "rank {rank}: {instr} names a chunk or edge the plan does not have, or one this rank does not touch"
    )]
    NoPeer { rank: usize, instr: Instr },
}

fn describe(waiting: &[(usize, Instr)]) -> String {
    waiting
        .iter()
        .map(|(k, i)| format!("rank {k} waits at {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    Act,
    Grad,
}

/// Simulates one step of `lists` (one instruction list per rank).
pub fn simulate(lists: &[Vec<Instr>], costs: &SimCosts) -> Result<SimReport, SimError> {
    let mut run = Run::new(lists, costs);
    while let Some((r, t)) = run.next()? {
        run.step(r, t)?;
    }
    Ok(run.report())
}

/// One step in simulation: where each rank is in its list, its clock, and the messages on
/// their way.
struct Run<'a> {
    lists: &'a [Vec<Instr>],
    costs: &'a SimCosts,
    pc: Vec<usize>,
    clock: Vec<f64>,
    busy: Vec<f64>,
    live: Vec<usize>,
    peak: Vec<usize>,
    /// (edge, direction, mb) → arrival time.
    arrivals: HashMap<(u32, Dir, u32), f64>,
    /// (from rank, to rank) → time the link is free.
    link_free: HashMap<(usize, usize), f64>,
    spans: Vec<Span>,
    /// Chunks whose backward a rank splits into B and W.
    split: Vec<Vec<u32>>,
}

impl<'a> Run<'a> {
    fn new(lists: &'a [Vec<Instr>], costs: &'a SimCosts) -> Run<'a> {
        let ranks = lists.len();
        let split = lists
            .iter()
            .map(|l| {
                l.iter()
                    .filter_map(|i| match *i {
                        Instr::BackwardWeight { chunk, .. } => Some(chunk),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Run {
            lists,
            costs,
            pc: vec![0; ranks],
            clock: vec![0.0; ranks],
            busy: vec![0.0; ranks],
            live: vec![0; ranks],
            peak: vec![0; ranks],
            arrivals: HashMap::new(),
            link_free: HashMap::new(),
            spans: Vec::new(),
            split,
        }
    }

    /// The rank that goes next and when it starts: the runnable rank that can act earliest,
    /// so links serve messages in time order. None when every list has run to its end.
    fn next(&self) -> Result<Option<(usize, f64)>, SimError> {
        let mut next: Option<(usize, f64)> = None;
        let mut waiting = Vec::new();
        for r in 0..self.lists.len() {
            let Some(&instr) = self.lists[r].get(self.pc[r]) else {
                continue;
            };
            match self.ready(r, instr) {
                Some(t) if next.is_none_or(|(_, best)| t < best) => next = Some((r, t)),
                Some(_) => {}
                None => waiting.push((r, instr)),
            }
        }
        match next {
            None if !waiting.is_empty() => Err(SimError::Deadlock { waiting }),
            next => Ok(next),
        }
    }

    /// When rank `r` can start `instr`: a receive once its message has arrived (None before).
    fn ready(&self, r: usize, instr: Instr) -> Option<f64> {
        let arrived = |edge, dir, mb| {
            self.arrivals
                .get(&(edge, dir, mb))
                .map(|&a| a.max(self.clock[r]))
        };
        match instr {
            Instr::RecvAct { edge, mb } => arrived(edge, Dir::Act, mb),
            Instr::RecvGrad { edge, mb } => arrived(edge, Dir::Grad, mb),
            _ => Some(self.clock[r]),
        }
    }

    /// Runs rank `r`'s next instruction, starting at `t`.
    fn step(&mut self, r: usize, t: f64) -> Result<(), SimError> {
        let instr = self.lists[r][self.pc[r]];
        self.pc[r] += 1;
        self.clock[r] = t;
        let no_peer = || SimError::NoPeer { rank: r, instr };
        let chunk_cost = |chunk: u32| {
            self.costs
                .chunks
                .get(chunk as usize)
                .copied()
                .ok_or_else(no_peer)
        };
        match instr {
            // Evaluation lists are not simulated (a step's list has none).
            Instr::RecvAct { .. } | Instr::RecvGrad { .. } | Instr::EvalForward { .. } => {}
            // Replicas are symmetric: one replica's lists are simulated, and its ring
            // all-reduce is time on the rank's clock.
            Instr::AllReduce { chunk } => {
                let ms = chunk_cost(chunk)?.allreduce_ms;
                self.compute(r, instr, ms);
            }
            Instr::Forward { chunk, .. } => {
                let ms = chunk_cost(chunk)?.forward_ms;
                self.compute(r, instr, ms);
                self.live[r] += 1;
                self.peak[r] = self.peak[r].max(self.live[r]);
            }
            Instr::Backward { chunk, .. } => {
                let c = chunk_cost(chunk)?;
                if self.split[r].contains(&chunk) {
                    self.compute(r, instr, c.input_backward_ms);
                } else {
                    self.compute(r, instr, c.backward_ms);
                    self.live[r] = self.live[r].saturating_sub(1);
                }
            }
            Instr::BackwardWeight { chunk, .. } => {
                let ms = chunk_cost(chunk)?.weight_ms;
                self.compute(r, instr, ms);
                self.live[r] = self.live[r].saturating_sub(1);
            }
            Instr::OptimizerStep { chunk } => {
                let ms = chunk_cost(chunk)?.optimizer_ms;
                self.compute(r, instr, ms);
            }
            Instr::SendAct { edge, mb } | Instr::SendGrad { edge, mb } => {
                self.send(r, instr, edge, mb)?
            }
        }
        Ok(())
    }

    /// `instr` occupies rank `r`'s compute for `ms`.
    fn compute(&mut self, r: usize, instr: Instr, ms: f64) {
        let start_ms = self.clock[r];
        self.spans.push(Span {
            rank: r,
            instr,
            start_ms,
            end_ms: start_ms + ms,
        });
        self.clock[r] += ms;
        self.busy[r] += ms;
    }

    /// A send takes no compute time; its message waits for the link, then occupies it.
    fn send(&mut self, r: usize, instr: Instr, edge: u32, mb: u32) -> Result<(), SimError> {
        let no_peer = || SimError::NoPeer { rank: r, instr };
        let e = self.costs.edges.get(edge as usize).ok_or_else(no_peer)?;
        let (from, to, dir, ms) = match instr {
            Instr::SendAct { .. } => (e.producer, e.consumer, Dir::Act, e.act_ms),
            _ => (e.consumer, e.producer, Dir::Grad, e.grad_ms),
        };
        if from != r {
            return Err(no_peer());
        }
        let free = self.link_free.entry((from, to)).or_insert(0.0);
        let start = free.max(self.clock[r]);
        *free = start + ms;
        self.arrivals.insert((edge, dir, mb), start + ms);
        Ok(())
    }

    fn report(self) -> SimReport {
        let step_ms = self.clock.iter().copied().fold(0.0, f64::max);
        let stages = (0..self.lists.len())
            .map(|r| StageReport {
                busy_ms: self.busy[r],
                idle_ms: step_ms - self.busy[r],
                bubble_fraction: if step_ms > 0.0 {
                    (step_ms - self.busy[r]) / step_ms
                } else {
                    0.0
                },
                peak_live_microbatches: self.peak[r],
            })
            .collect();
        SimReport {
            step_ms,
            stages,
            spans: self.spans,
        }
    }
}
