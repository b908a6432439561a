//! Each rank's timeline as inline SVG, one lane per rank (compute above, I/O below), coloured
//! by what ran: measured from a trace, or predicted by the simulator.

use super::esc;
use crate::schedule::Instr;
use crate::sim::SimReport;
use crate::trace::TraceEvent;
use std::fmt::Write;

/// One bar of a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub start_ms: f64,
    pub end_ms: f64,
    /// What ran: a key of [`COLORS`].
    pub kind: String,
    /// I/O thread (drawn in the lane's lower row).
    pub io: bool,
    pub label: String,
}

/// What each kind of span is drawn in, and its legend.
pub const COLORS: &[(&str, &str, &str)] = &[
    ("forward", "#4e79a7", "forward"),
    ("backward", "#e15759", "backward"),
    ("backward_weight", "#b07aa1", "W (weight gradients)"),
    ("optimizer", "#555555", "optimizer"),
    ("allreduce", "#59a14f", "all-reduce"),
    ("send", "#76b7b2", "send"),
    ("recv", "#edc948", "receive (waiting)"),
    ("data", "#f28e2b", "data"),
    ("evaluate", "#ff9da7", "evaluate"),
    ("checkpoint", "#9c755f", "checkpoint"),
];

fn color(kind: &str) -> &'static str {
    COLORS
        .iter()
        .find(|c| kind.starts_with(c.0) && (kind == c.0 || c.0 != "backward"))
        .map_or("#bab0ac", |c| c.1)
}

/// The measured bars of `ranks` ranks in the window of `events` covering `steps` consecutive
/// steps: the last ones that neither start the run (warm-up) nor neighbour an evaluation (a
/// rank evaluates while its successor still trains); times from the window's start.
pub fn measured(events: &[TraceEvent], ranks: usize, steps: u64) -> (Vec<Vec<Bar>>, f64) {
    let (first, last) = window(events, steps);
    let in_steps = |e: &&TraceEvent| {
        (first..=last).contains(&e.args.step) && e.name != "evaluate" && e.name != "send_eval"
    };
    let t0 = events
        .iter()
        .filter(in_steps)
        .map(|e| e.ts)
        .min()
        .unwrap_or(0);
    let t1 = events
        .iter()
        .filter(in_steps)
        .map(|e| e.ts + e.dur)
        .max()
        .unwrap_or(t0);
    let mut lanes = vec![Vec::new(); ranks];
    for e in events.iter().filter(|e| e.ts + e.dur > t0 && e.ts < t1) {
        if let Some(lane) = lanes.get_mut(e.pid as usize) {
            lane.push(Bar {
                start_ms: (e.ts.max(t0) - t0) as f64 / 1e3,
                end_ms: ((e.ts + e.dur).min(t1) - t0) as f64 / 1e3,
                kind: e.name.clone(),
                io: e.tid == 1,
                label: format!("{} step {} mb {}", e.name, e.args.step, e.args.mb),
            });
        }
    }
    (lanes, (t1 - t0) as f64 / 1e3)
}

/// The steps `first..=last` the measured timeline shows.
fn window(events: &[TraceEvent], steps: u64) -> (u64, u64) {
    let last = events.iter().map(|e| e.args.step).max().unwrap_or(0);
    let evals: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "evaluate")
        .map(|e| e.args.step)
        .collect();
    // An evaluation after step s runs between steps s and s + 1.
    let clear = |end: u64| {
        !evals
            .iter()
            .any(|&s| s + 1 >= end.saturating_sub(steps) && s <= end)
    };
    (steps + 1..=last)
        .rev()
        .find(|&end| clear(end))
        .map_or((last.saturating_sub(steps - 1).max(1), last), |end| {
            (end + 1 - steps, end)
        })
}

/// The simulator's bars of one step, per rank.
pub fn predicted(sim: &SimReport) -> (Vec<Vec<Bar>>, f64) {
    let mut lanes = vec![Vec::new(); sim.stages.len()];
    for s in &sim.spans {
        let kind = match s.instr {
            Instr::Forward { .. } => "forward",
            Instr::Backward { .. } => "backward",
            Instr::BackwardWeight { .. } => "backward_weight",
            Instr::OptimizerStep { .. } => "optimizer",
            Instr::AllReduce { .. } => "allreduce",
            Instr::EvalForward { .. } => "evaluate",
            _ => "send",
        };
        if let Some(lane) = lanes.get_mut(s.rank) {
            lane.push(Bar {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                kind: kind.into(),
                io: false,
                label: s.instr.to_string(),
            });
        }
    }
    (lanes, sim.step_ms)
}

const W: f64 = 880.0;
const LEFT: f64 = 64.0;
const LANE: f64 = 34.0;

/// The SVG of `lanes` over `span_ms`, with `id`.
pub fn svg(id: &str, lanes: &[Vec<Bar>], span_ms: f64) -> String {
    let h = 24.0 + LANE * lanes.len() as f64 + 20.0;
    let span = span_ms.max(1e-6);
    let sx = |t: f64| LEFT + t / span * (W - LEFT - 8.0);
    let mut s = format!(
        r#"<svg id="{id}" class="timeline" viewBox="0 0 {W} {h}" width="{W}" height="{h}">"#
    );
    for (v, label) in super::charts::ticks(0.0, span) {
        let x = sx(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="16" y2="{:.1}"/><text class="tick" x="{x:.1}" y="12" text-anchor="middle">{label} ms</text>"#,
            h - 20.0
        );
    }
    for (rank, bars) in lanes.iter().enumerate() {
        let y = 20.0 + LANE * rank as f64;
        let _ = write!(
            s,
            r#"<g class="lane" data-rank="{rank}"><text class="tick" x="4" y="{:.1}">rank {rank}</text><rect class="idle" x="{LEFT}" y="{y:.1}" width="{:.1}" height="20"/>"#,
            y + 14.0,
            W - LEFT - 8.0
        );
        for b in bars {
            let (by, bh) = if b.io { (y + 22.0, 8.0) } else { (y, 20.0) };
            let x = sx(b.start_ms);
            let w = (sx(b.end_ms) - x).max(0.5);
            let _ = write!(
                s,
                r#"<rect class="span" data-kind="{k}" x="{x:.2}" y="{by:.1}" width="{w:.2}" height="{bh}" fill="{c}"><title>{t} ({:.2} ms)</title></rect>"#,
                b.end_ms - b.start_ms,
                k = esc(&b.kind),
                c = color(&b.kind),
                t = esc(&b.label)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// Per rank: the fraction of the window its compute thread was idle (waiting included).
pub fn idle_fractions(lanes: &[Vec<Bar>], span_ms: f64) -> Vec<f64> {
    lanes
        .iter()
        .map(|bars| {
            let busy: f64 = bars
                .iter()
                // Receives on the compute thread are waits; data waits sit inside a forward.
                .filter(|b| !b.io && b.kind != "data" && !b.kind.starts_with("recv"))
                .map(|b| b.end_ms - b.start_ms)
                .sum();
            (1.0 - busy / span_ms.max(1e-9)).clamp(0.0, 1.0)
        })
        .collect()
}

/// The colour legend.
pub fn legend() -> String {
    let items: Vec<String> = COLORS
        .iter()
        .map(|(_, c, name)| {
            format!(r#"<span class="key"><i style="background:{c}"></i>{name}</span>"#)
        })
        .collect();
    format!(
        r#"<p class="legend">{} <span class="key"><i class="idle"></i>idle</span> (I/O thread: the thin row)</p>"#,
        items.join(" ")
    )
}
