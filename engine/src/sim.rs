//! The schedule simulator: runs every stage's instruction list against per-stage costs and
//! link times, as the executor would, and reports the step time, each stage's idle time and
//! peak live micro-batches — or the deadlock, before any process starts.
//!
//! Model: a stage's compute thread runs its list in order; forward, backward and the optimizer
//! step take their cost; a send takes no compute time (the I/O thread does it) but occupies the
//! link for `latency + bytes / bandwidth`, one message at a time, in the order sent; a receive
//! waits until the message has arrived.

use crate::schedule::Instr;
use serde::Serialize;
use std::collections::HashMap;

/// Costs of one stage, per micro-batch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageCost {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// Time to move one activation to the next stage.
    pub send_act_ms: f64,
    /// Time to move one input gradient to the previous stage.
    pub send_grad_ms: f64,
}

/// What one instruction occupied.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub stage: usize,
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
    pub stages: Vec<StageReport>,
    /// Compute spans (forward, backward, optimizer), in execution order per stage.
    pub spans: Vec<Span>,
}

/// A schedule that cannot finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("the schedule deadlocks: {}", describe(.waiting))]
    Deadlock { waiting: Vec<(usize, Instr)> },
    #[error("stage {stage}: {instr} has no peer stage to talk to")]
    NoPeer { stage: usize, instr: Instr },
    #[error("{0} instruction lists for {1} stage costs")]
    Shape(usize, usize),
}

fn describe(waiting: &[(usize, Instr)]) -> String {
    waiting
        .iter()
        .map(|(k, i)| format!("stage {k} waits at {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    Act,
    Grad,
}

/// Simulates one step.
pub fn simulate(lists: &[Vec<Instr>], costs: &[StageCost]) -> Result<SimReport, SimError> {
    let k_total = lists.len();
    if costs.len() != k_total {
        return Err(SimError::Shape(k_total, costs.len()));
    }
    let mut pc = vec![0usize; k_total];
    let mut clock = vec![0.0f64; k_total];
    let mut busy = vec![0.0f64; k_total];
    let mut live = vec![0usize; k_total];
    let mut peak = vec![0usize; k_total];
    // (receiving stage, direction, mb) → arrival time.
    let mut arrivals: HashMap<(usize, Dir, u32), f64> = HashMap::new();
    // (from, to) → time the link is free.
    let mut link_free: HashMap<(usize, usize), f64> = HashMap::new();
    let mut spans = Vec::new();
    loop {
        // The runnable stage that can act earliest goes next, so links serve messages in time order.
        let mut next: Option<(usize, f64)> = None;
        let mut waiting = Vec::new();
        for k in 0..k_total {
            let Some(&instr) = lists[k].get(pc[k]) else {
                continue;
            };
            let ready = match instr {
                Instr::RecvAct(mb) => arrivals.get(&(k, Dir::Act, mb)).map(|&a| a.max(clock[k])),
                Instr::RecvGrad(mb) => arrivals.get(&(k, Dir::Grad, mb)).map(|&a| a.max(clock[k])),
                _ => Some(clock[k]),
            };
            match ready {
                Some(t) if next.is_none_or(|(_, best)| t < best) => next = Some((k, t)),
                Some(_) => {}
                None => waiting.push((k, instr)),
            }
        }
        let Some((k, t)) = next else {
            if waiting.is_empty() {
                break;
            }
            return Err(SimError::Deadlock { waiting });
        };
        let instr = lists[k][pc[k]];
        pc[k] += 1;
        clock[k] = t;
        let c = costs[k];
        let mut compute = |clock: &mut f64, ms: f64| {
            spans.push(Span {
                stage: k,
                instr,
                start_ms: *clock,
                end_ms: *clock + ms,
            });
            *clock += ms;
            busy[k] += ms;
        };
        match instr {
            Instr::RecvAct(_) | Instr::RecvGrad(_) => {}
            Instr::Forward(_) => {
                compute(&mut clock[k], c.forward_ms);
                live[k] += 1;
                peak[k] = peak[k].max(live[k]);
            }
            Instr::Backward(_) => {
                compute(&mut clock[k], c.backward_ms);
                live[k] = live[k].saturating_sub(1);
            }
            Instr::OptimizerStep => compute(&mut clock[k], c.optimizer_ms),
            Instr::SendAct(mb) | Instr::SendGrad(mb) => {
                let (to, dir, ms) = match instr {
                    Instr::SendAct(_) if k + 1 < k_total => (k + 1, Dir::Act, c.send_act_ms),
                    Instr::SendGrad(_) if k > 0 => (k - 1, Dir::Grad, c.send_grad_ms),
                    _ => return Err(SimError::NoPeer { stage: k, instr }),
                };
                let free = link_free.entry((k, to)).or_insert(0.0);
                let start = free.max(clock[k]);
                *free = start + ms;
                arrivals.insert((to, dir, mb), start + ms);
            }
        }
    }
    let step_ms = clock.iter().copied().fold(0.0, f64::max);
    let stages = (0..k_total)
        .map(|k| StageReport {
            busy_ms: busy[k],
            idle_ms: step_ms - busy[k],
            bubble_fraction: if step_ms > 0.0 {
                (step_ms - busy[k]) / step_ms
            } else {
                0.0
            },
            peak_live_microbatches: peak[k],
        })
        .collect();
    Ok(SimReport {
        step_ms,
        stages,
        spans,
    })
}

/// A text Gantt chart, one row per stage, `width` columns for the step. Forward of micro-batch i
/// is shown as its digit (0-9, then A-Z), backward as a letter (a = micro-batch 0), the optimizer
/// step as `#`, idle as `.`.
pub fn gantt(report: &SimReport, stages: usize, width: usize) -> Vec<String> {
    let mut rows = vec![vec!['.'; width]; stages];
    let scale = if report.step_ms > 0.0 {
        width as f64 / report.step_ms
    } else {
        0.0
    };
    for s in &report.spans {
        let c = match s.instr {
            Instr::Forward(mb) => char::from_digit(mb % 36, 36).unwrap().to_ascii_uppercase(),
            Instr::Backward(mb) => (b'a' + (mb % 26) as u8) as char,
            _ => '#',
        };
        // A column shows what runs at its midpoint.
        let first = ((s.start_ms * scale) - 0.5).ceil().max(0.0) as usize;
        let last = ((s.end_ms * scale) - 0.5).ceil().max(0.0) as usize;
        for cell in rows[s.stage].iter_mut().take(last.min(width)).skip(first) {
            *cell = c;
        }
    }
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{gpipe, one_f_one_b};
    use brigade_partitioner::ScheduleKind;

    fn unit(k: usize, fwd: f64, bwd: f64) -> Vec<StageCost> {
        vec![
            StageCost {
                forward_ms: fwd,
                backward_ms: bwd,
                ..Default::default()
            };
            k
        ]
    }

    fn chart(
        kind: ScheduleKind,
        k: usize,
        m: usize,
        fwd: f64,
        bwd: f64,
    ) -> (SimReport, Vec<String>) {
        let lists = crate::schedule::schedule(kind, k, m);
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
        let lists = vec![gpipe(0, 2, 1), gpipe(1, 2, 1)];
        let mut costs = unit(2, 1.0, 1.0);
        costs[0].send_act_ms = 0.5;
        costs[1].send_grad_ms = 0.25;
        let r = simulate(&lists, &costs).unwrap();
        // F0 on stage 0 [0,1], transfer [1,1.5], F0+B0 on stage 1 [1.5,3.5], transfer [3.5,3.75], B0 [3.75,4.75].
        assert!((r.step_ms - 4.75).abs() < 1e-12);
    }

    #[test]
    fn broken_schedule_is_a_deadlock() {
        // Stage 1 waits for a gradient before it ever receives an activation: it never sends the
        // activation gradient stage 0 waits for, and stage 0 cannot proceed either.
        let mut lists = vec![one_f_one_b(0, 2, 2), one_f_one_b(1, 2, 2)];
        lists[0].retain(|i| *i != Instr::SendAct(1));
        let err = simulate(&lists, &unit(2, 1.0, 1.0)).unwrap_err();
        match &err {
            SimError::Deadlock { waiting } => {
                assert!(waiting.contains(&(0, Instr::RecvGrad(1))), "{err}");
                assert!(waiting.contains(&(1, Instr::RecvAct(1))), "{err}");
            }
            other => panic!("expected a deadlock, got {other}"),
        }
        assert!(err.to_string().contains("stage 1 waits at recv_act1"));
    }
}
