//! The simulator's tables: the timelines drawn in the schedules' documentation.

use super::*;
use crate::ScheduleKind;
use crate::{ChunkSlot, chain_schedule, gpipe, one_f_one_b};

fn unit(k: usize, fwd: f64, bwd: f64) -> SimCosts {
    SimCosts::uniform_chain(k, fwd, bwd)
}

fn chart(kind: ScheduleKind, k: usize, m: usize, fwd: f64, bwd: f64) -> (SimReport, Vec<String>) {
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
