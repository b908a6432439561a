//! The schedule simulator: runs every rank's instruction list against per-chunk costs and
//! per-edge link times, as the executors would, and reports the step time, each rank's idle time and
//! peak live micro-batches — or the deadlock, before any process starts.
//!
//! Model: a rank's compute thread runs its list in order; forward, backward and the optimizer
//! step take their cost; a send takes no compute time (the I/O thread does it) but occupies the
//! link for `latency + bytes / bandwidth`, one message at a time, in the order sent; a receive
//! waits until the message has arrived.

use crate::schedule::Instr;
use serde::Serialize;
use std::collections::HashMap;

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
    let ranks = lists.len();
    let mut pc = vec![0usize; ranks];
    let mut clock = vec![0.0f64; ranks];
    let mut busy = vec![0.0f64; ranks];
    let mut live = vec![0usize; ranks];
    let mut peak = vec![0usize; ranks];
    // (edge, direction, mb) → arrival time.
    let mut arrivals: HashMap<(u32, Dir, u32), f64> = HashMap::new();
    // (from rank, to rank) → time the link is free.
    let mut link_free: HashMap<(usize, usize), f64> = HashMap::new();
    let mut spans = Vec::new();
    // Chunks whose backward a rank splits into B and W.
    let split: Vec<Vec<u32>> = lists
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
    loop {
        // The runnable rank that can act earliest goes next, so links serve messages in time order.
        let mut next: Option<(usize, f64)> = None;
        let mut waiting = Vec::new();
        for r in 0..ranks {
            let Some(&instr) = lists[r].get(pc[r]) else {
                continue;
            };
            let ready = match instr {
                Instr::RecvAct { edge, mb } => arrivals
                    .get(&(edge, Dir::Act, mb))
                    .map(|&a| a.max(clock[r])),
                Instr::RecvGrad { edge, mb } => arrivals
                    .get(&(edge, Dir::Grad, mb))
                    .map(|&a| a.max(clock[r])),
                _ => Some(clock[r]),
            };
            match ready {
                Some(t) if next.is_none_or(|(_, best)| t < best) => next = Some((r, t)),
                Some(_) => {}
                None => waiting.push((r, instr)),
            }
        }
        let Some((r, t)) = next else {
            if waiting.is_empty() {
                break;
            }
            return Err(SimError::Deadlock { waiting });
        };
        let instr = lists[r][pc[r]];
        pc[r] += 1;
        clock[r] = t;
        let no_peer = || SimError::NoPeer { rank: r, instr };
        let chunk_cost = |chunk: u32| {
            costs
                .chunks
                .get(chunk as usize)
                .copied()
                .ok_or_else(no_peer)
        };
        let mut compute = |clock: &mut f64, ms: f64| {
            spans.push(Span {
                rank: r,
                instr,
                start_ms: *clock,
                end_ms: *clock + ms,
            });
            *clock += ms;
            busy[r] += ms;
        };
        match instr {
            // Evaluation lists are not simulated (a step's list has none).
            Instr::RecvAct { .. } | Instr::RecvGrad { .. } | Instr::EvalForward { .. } => {}
            // Replicas are symmetric: one replica's lists are simulated, and its ring
            // all-reduce is time on the rank's clock.
            Instr::AllReduce { chunk } => compute(&mut clock[r], chunk_cost(chunk)?.allreduce_ms),
            Instr::Forward { chunk, .. } => {
                compute(&mut clock[r], chunk_cost(chunk)?.forward_ms);
                live[r] += 1;
                peak[r] = peak[r].max(live[r]);
            }
            Instr::Backward { chunk, .. } => {
                let c = chunk_cost(chunk)?;
                if split[r].contains(&chunk) {
                    compute(&mut clock[r], c.input_backward_ms);
                } else {
                    compute(&mut clock[r], c.backward_ms);
                    live[r] = live[r].saturating_sub(1);
                }
            }
            Instr::BackwardWeight { chunk, .. } => {
                compute(&mut clock[r], chunk_cost(chunk)?.weight_ms);
                live[r] = live[r].saturating_sub(1);
            }
            Instr::OptimizerStep { chunk } => {
                compute(&mut clock[r], chunk_cost(chunk)?.optimizer_ms)
            }
            Instr::SendAct { edge, mb } | Instr::SendGrad { edge, mb } => {
                let e = costs.edges.get(edge as usize).ok_or_else(no_peer)?;
                let (from, to, dir, ms) = match instr {
                    Instr::SendAct { .. } => (e.producer, e.consumer, Dir::Act, e.act_ms),
                    _ => (e.consumer, e.producer, Dir::Grad, e.grad_ms),
                };
                if from != r {
                    return Err(no_peer());
                }
                let free = link_free.entry((from, to)).or_insert(0.0);
                let start = free.max(clock[r]);
                *free = start + ms;
                arrivals.insert((edge, dir, mb), start + ms);
            }
        }
    }
    let step_ms = clock.iter().copied().fold(0.0, f64::max);
    let stages = (0..ranks)
        .map(|r| StageReport {
            busy_ms: busy[r],
            idle_ms: step_ms - busy[r],
            bubble_fraction: if step_ms > 0.0 {
                (step_ms - busy[r]) / step_ms
            } else {
                0.0
            },
            peak_live_microbatches: peak[r],
        })
        .collect();
    Ok(SimReport {
        step_ms,
        stages,
        spans,
    })
}

/// A text Gantt chart, one row per rank, `width` columns for the step. Forward of micro-batch i
/// is shown as its last digit, backward as a lower-case letter (a = micro-batch 0), ZB-H1's
/// weight-gradient pass W as the upper-case letter, the optimizer step as `#`, idle as `.`.
pub fn gantt(report: &SimReport, stages: usize, width: usize) -> Vec<String> {
    chart(report, stages, width, |s| s.rank)
}

/// [`gantt`] with one row per chunk instead of per rank (for ranks that hold several chunks).
pub fn gantt_by_chunk(report: &SimReport, chunks: usize, width: usize) -> Vec<String> {
    chart(report, chunks, width, |s| match s.instr {
        Instr::Forward { chunk, .. }
        | Instr::Backward { chunk, .. }
        | Instr::BackwardWeight { chunk, .. }
        | Instr::OptimizerStep { chunk } => chunk as usize,
        _ => usize::MAX,
    })
}

fn chart(
    report: &SimReport,
    rows_n: usize,
    width: usize,
    row_of: impl Fn(&Span) -> usize,
) -> Vec<String> {
    let mut rows = vec![vec!['.'; width]; rows_n];
    let scale = if report.step_ms > 0.0 {
        width as f64 / report.step_ms
    } else {
        0.0
    };
    for s in &report.spans {
        let c = match s.instr {
            Instr::Forward { mb, .. } => char::from_digit(mb % 10, 10).unwrap(),
            Instr::Backward { mb, .. } => (b'a' + (mb % 26) as u8) as char,
            Instr::BackwardWeight { mb, .. } => (b'A' + (mb % 26) as u8) as char,
            _ => '#',
        };
        // A column shows what runs at its midpoint.
        let first = ((s.start_ms * scale) - 0.5).ceil().max(0.0) as usize;
        let last = ((s.end_ms * scale) - 0.5).ceil().max(0.0) as usize;
        let Some(row) = rows.get_mut(row_of(s)) else {
            continue;
        };
        for cell in row.iter_mut().take(last.min(width)).skip(first) {
            *cell = c;
        }
    }
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ChunkSlot, chain_schedule, gpipe, one_f_one_b};
    use brigade_partitioner::ScheduleKind;

    fn unit(k: usize, fwd: f64, bwd: f64) -> SimCosts {
        SimCosts::uniform_chain(k, fwd, bwd)
    }

    fn chart(
        kind: ScheduleKind,
        k: usize,
        m: usize,
        fwd: f64,
        bwd: f64,
    ) -> (SimReport, Vec<String>) {
        let lists = chain_schedule(kind, k, k, m);
        let r = simulate(&lists, &unit(k, fwd, bwd)).unwrap();
        let width = (r.step_ms / fwd).round() as usize;
        let g = gantt(&r, k, width);
        (r, g)
    }

    #[test]
    fn gpipe_k4_m8_table() {
        // Forward 1 ms, backward 2 ms, free links: each column is 1 ms.
        let (r, g) = chart(ScheduleKind::Gpipe, 4, 8, 1.0, 2.0);
        assert_eq!(
            g,
            vec![
                "01234567.........aabbccddeeffgghh",
                ".01234567......aabbccddeeffgghh..",
                "..01234567...aabbccddeeffgghh....",
                "...01234567aabbccddeeffgghh......",
            ]
        );
        assert_eq!(r.step_ms, 33.0);
        // (K−1)/(M+K−1) of the step is idle on every stage.
        for s in &r.stages {
            assert!((s.bubble_fraction - 9.0 / 33.0).abs() < 1e-12);
            assert_eq!(s.peak_live_microbatches, 8);
        }
    }

    #[test]
    fn one_f_one_b_k4_m8_table() {
        let (r, g) = chart(ScheduleKind::OneFOneB, 4, 8, 1.0, 2.0);
        assert_eq!(
            g,
            vec![
                "0123......aa4bb5cc6dd7ee.ff.gg.hh",
                ".012....aa3bb4cc5dd6ee7ff.gg.hh..",
                "..01..aa2bb3cc4dd5ee6ff7gg.hh....",
                "...0aa1bb2cc3dd4ee5ff6gg7hh......",
            ]
        );
        // The same step time as GPipe: 1F1B saves memory, not bubble.
        assert_eq!(r.step_ms, 33.0);
        let peaks: Vec<usize> = r.stages.iter().map(|s| s.peak_live_microbatches).collect();
        assert_eq!(peaks, vec![4, 3, 2, 1]);
    }

    #[test]
    fn module_doc_charts_k4_m4() {
        // The timelines drawn in `schedule`'s documentation.
        let (_, g) = chart(ScheduleKind::Gpipe, 4, 4, 1.0, 1.0);
        assert_eq!(
            g,
            vec![
                "0123......abcd",
                ".0123....abcd.",
                "..0123..abcd..",
                "...0123abcd..."
            ]
        );
        let (_, g) = chart(ScheduleKind::OneFOneB, 4, 4, 1.0, 1.0);
        assert_eq!(
            g,
            vec![
                "0123...a.b.c.d",
                ".012..a3b.c.d.",
                "..01.a2b3c.d..",
                "...0a1b2c3d..."
            ]
        );
    }

    #[test]
    fn links_delay_receives() {
        let lists = chain_schedule(ScheduleKind::Gpipe, 2, 2, 1);
        let mut costs = unit(2, 1.0, 1.0);
        costs.edges[0].act_ms = 0.5;
        costs.edges[0].grad_ms = 0.25;
        let r = simulate(&lists, &costs).unwrap();
        // F0 on stage 0 [0,1], transfer [1,1.5], F0+B0 on stage 1 [1.5,3.5], transfer [3.5,3.75], B0 [3.75,4.75].
        assert!((r.step_ms - 4.75).abs() < 1e-12);
    }

    #[test]
    fn broken_schedule_is_a_deadlock() {
        // Stage 1 waits for a gradient before it ever receives an activation: it never sends the
        // activation gradient stage 0 waits for, and stage 0 cannot proceed either.
        let mut lists = chain_schedule(ScheduleKind::OneFOneB, 2, 2, 2);
        lists[0].retain(|i| *i != Instr::SendAct { edge: 0, mb: 1 });
        let err = simulate(&lists, &unit(2, 1.0, 1.0)).unwrap_err();
        match &err {
            SimError::Deadlock { waiting } => {
                assert!(
                    waiting.contains(&(0, Instr::RecvGrad { edge: 0, mb: 1 })),
                    "{err}"
                );
                assert!(
                    waiting.contains(&(1, Instr::RecvAct { edge: 0, mb: 1 })),
                    "{err}"
                );
            }
            other => panic!("expected a deadlock, got {other}"),
        }
        assert!(err.to_string().contains("rank 1 waits at recv_act1@e0"));
    }

    #[test]
    fn ranks_follow_the_plan_not_the_chunk_order() {
        // Chunk 0 on rank 1 and chunk 1 on rank 0: the same step, the rows swapped.
        let lists = vec![
            gpipe(ChunkSlot::chain(1, 2), 2),
            gpipe(ChunkSlot::chain(0, 2), 2),
        ];
        let mut costs = unit(2, 1.0, 1.0);
        costs.edges[0] = EdgeCost {
            producer: 1,
            consumer: 0,
            ..Default::default()
        };
        let r = simulate(&lists, &costs).unwrap();
        assert_eq!(gantt(&r, 2, 6), vec![".01ab.", "01..ab"]);
        // A send from a rank that does not hold the edge's producer chunk is caught.
        costs.edges[0].producer = 0;
        costs.edges[0].consumer = 1;
        assert!(matches!(
            simulate(&lists, &costs),
            Err(SimError::NoPeer { rank: 1, .. })
        ));
    }

    #[test]
    fn one_f_one_b_lists_used_by_name() {
        // The schedule functions take a chunk's slot; the simulator only sees the lists.
        let lists: Vec<_> = (0..2)
            .map(|k| one_f_one_b(ChunkSlot::chain(k, 2), 2))
            .collect();
        assert_eq!(simulate(&lists, &unit(2, 1.0, 1.0)).unwrap().step_ms, 6.0);
    }

    /// K ranks holding `chunks` chunks round-robin, forward 1, backward `bwd` (B `b` + W `w`
    /// when split), free links.
    fn round_robin(
        kind: ScheduleKind,
        k: usize,
        chunks: usize,
        m: usize,
        bwd: f64,
        b: f64,
    ) -> SimReport {
        let lists = chain_schedule(kind, k, chunks, m);
        let mut costs = unit(chunks, 1.0, bwd);
        for c in &mut costs.chunks {
            c.input_backward_ms = b;
            c.weight_ms = bwd - b;
        }
        for (e, edge) in costs.edges.iter_mut().enumerate() {
            edge.producer = e % k;
            edge.consumer = (e + 1) % k;
        }
        simulate(&lists, &costs).unwrap()
    }

    #[test]
    fn interleaving_divides_the_bubble() {
        // K = 2 ranks, M = 4, forward 1 and backward 2 per whole stage: 1F1B on 2 chunks,
        // interleaved on 4 chunks of half the cost each.
        let plain = round_robin(ScheduleKind::OneFOneB, 2, 2, 4, 2.0, 2.0);
        let lists = chain_schedule(ScheduleKind::Interleaved1F1B, 2, 4, 4);
        let mut costs = unit(4, 0.5, 1.0);
        for (e, edge) in costs.edges.iter_mut().enumerate() {
            edge.producer = e % 2;
            edge.consumer = (e + 1) % 2;
        }
        let inter = simulate(&lists, &costs).unwrap();
        assert_eq!(plain.step_ms, 15.0);
        assert_eq!(inter.step_ms, 13.5);
        assert_eq!(
            gantt_by_chunk(&inter, 4, 27),
            vec![
                "01..2...3...aa.bb......ccdd",
                ".01......2aa3bb......ccdd..",
                "..01..aa.bb2..3...cc.dd....",
                "...0aa1bb......2cc3dd......",
            ]
        );
    }

    #[test]
    fn zb_h1_moves_weight_gradients_off_the_critical_path() {
        // K = 3, M = 4, F = 1, B = 1, W = 1 (1F1B runs B and W together as a backward of 2).
        let f1b = round_robin(ScheduleKind::OneFOneB, 3, 3, 4, 2.0, 2.0);
        let zb = round_robin(ScheduleKind::ZbH1, 3, 3, 4, 2.0, 1.0);
        assert_eq!(f1b.step_ms, 18.0);
        assert_eq!(zb.step_ms, 14.0);
        assert_eq!(
            gantt(&zb, 3, 14),
            vec!["012..aA3bBcCdD", ".01.a2bA3cBdCD", "..0a1b2cA3dBCD"]
        );
        // 1F1B's peak memory: later ranks keep more micro-batches until their W, never more
        // than rank 0 keeps under 1F1B (K).
        let peaks = |r: &SimReport| -> Vec<usize> {
            r.stages.iter().map(|s| s.peak_live_microbatches).collect()
        };
        assert_eq!(peaks(&f1b), vec![3, 2, 1]);
        assert_eq!(peaks(&zb), vec![3, 3, 3]);
    }
}
