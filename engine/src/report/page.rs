//! The report page: sections in reading order, each a function of the inputs.

use super::charts::{Series, line_chart};
use super::timeline::{self, Bar};
use super::{Inputs, esc};
use std::fmt::Write;

/// Measured steps shown in the timeline.
const TIMELINE_STEPS: u64 = 3;

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 920px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.summary { color: #444; } .note { color: #777; font-style: italic; }
svg { display: block; margin: 8px 0; background: #fff; }
.title { font-weight: 600; font-size: 13px; } .tick, .legend { font-size: 11px; fill: #555; }
.grid { stroke: #e6e6e6; } .restart { stroke: #c00; stroke-dasharray: 4 3; }
.idle { fill: #f3f3f3; } p.legend .key { margin-right: 10px; white-space: nowrap; }
p.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px; }
p.legend i.idle { background: #f3f3f3; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 10px; border-bottom: 1px solid #e6e6e6; text-align: right; }
th { background: #f7f7f7; } td.l, th.l { text-align: left; }
"#;

pub fn render(i: &Inputs) -> String {
    let name = i
        .plan
        .map_or(i.metrics_file.to_string(), |p| p.topo.name.clone());
    let mut s = String::from("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if i.live {
        s.push_str(r#"<meta http-equiv="refresh" content="15">"#);
    }
    let _ = write!(
        s,
        "<title>brigade report: {n}</title><style>{STYLE}</style></head><body><h1>brigade run report: {n}</h1>",
        n = esc(&name)
    );
    s.push_str(&summary(i));
    s.push_str(&curves(i));
    s.push_str(&timelines(i));
    s.push_str(&ranks_table(i));
    s.push_str(&stages_table(i));
    s.push_str("</body></html>\n");
    s
}

fn summary(i: &Inputs) -> String {
    let m = &i.metrics;
    let file = std::path::Path::new(i.metrics_file)
        .file_name()
        .map_or(i.metrics_file.into(), |n| n.to_string_lossy());
    let mut parts = vec![format!("metrics: {}", esc(&file))];
    if let Some(p) = &i.plan {
        parts.push(format!(
            "{} schedule, {} ranks, {} chunks, {} micro-batches, {} replica(s)",
            esc(&p.plan.schedule),
            p.sim.stages.len(),
            p.plan.stages.len(),
            p.plan.microbatches,
            p.topo.partition.replicas
        ));
    }
    if let Some(last) = m.steps.last() {
        let tail = &m.steps[m.steps.len() - m.steps.len().div_ceil(10)..];
        let sps = tail.iter().map(|s| s.samples_per_sec).sum::<f64>() / tail.len() as f64;
        parts.push(format!(
            "{} steps, final loss {:.4}, {:.0} samples/s (last tenth)",
            last.step, last.loss, sps
        ));
    }
    if let Some(e) = m.evals.last() {
        parts.push(format!(
            "after step {}: {}",
            e.step,
            esc(&crate::metrics::describe_eval(e))
        ));
    }
    if !m.restarts.is_empty() {
        parts.push(format!("{} restart(s)", m.restarts.len()));
    }
    if i.live {
        parts.push("training: this page reloads itself".into());
    }
    format!(r#"<p class="summary">{}</p>"#, parts.join(" · "))
}

fn curves(i: &Inputs) -> String {
    let m = &i.metrics;
    let marks: Vec<u64> = m.restarts.iter().map(|r| r.0).collect();
    let steps = |f: &dyn Fn(&crate::metrics::StepMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        m.steps
            .iter()
            .filter_map(|s| f(s).map(|v| (s.step as f64, v)))
            .collect()
    };
    let evals = |f: &dyn Fn(&crate::metrics::EvalMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        m.evals
            .iter()
            .filter_map(|e| f(e).map(|v| (e.step as f64, v)))
            .collect()
    };
    let series = |name, color, points| Series {
        name,
        color,
        points,
    };
    // (id, title, series); a chart whose series are all empty is left out, but for the loss.
    let charts = [
        (
            "chart-loss",
            "loss",
            vec![
                series("loss", "#4e79a7", steps(&|s| Some(s.loss))),
                series("val_loss", "#e15759", evals(&|e| Some(e.val_loss))),
            ],
        ),
        (
            "chart-accuracy",
            "validation accuracy, %",
            vec![series(
                "val_accuracy",
                "#59a14f",
                evals(&|e| e.val_accuracy.map(|a| a * 100.0)),
            )],
        ),
        (
            "chart-throughput",
            "samples per second",
            vec![series(
                "samples/s",
                "#f28e2b",
                steps(&|s| Some(s.samples_per_sec)),
            )],
        ),
        (
            "chart-lr",
            "learning rate",
            vec![series("lr", "#76b7b2", steps(&|s| s.lr))],
        ),
        (
            "chart-grad-norm",
            "gradient norm (before clipping)",
            vec![series("grad_norm", "#b07aa1", steps(&|s| s.grad_norm))],
        ),
    ];
    let mut s = String::from("<h2>Training</h2>");
    for (id, title, lines) in charts {
        let always = matches!(id, "chart-loss" | "chart-throughput" | "chart-lr");
        if always || lines.iter().any(|l| !l.points.is_empty()) {
            s.push_str(&line_chart(id, title, &lines, &marks));
        }
    }
    s
}

/// Lanes of the measured timeline, if a trace was given.
fn measured(i: &Inputs) -> Option<(Vec<Vec<Bar>>, f64)> {
    let t = i.trace.as_ref()?;
    let ranks = i.plan.map_or_else(
        || {
            t.events
                .iter()
                .map(|e| e.pid as usize + 1)
                .max()
                .unwrap_or(0)
        },
        |p| p.sim.stages.len(),
    );
    Some(timeline::measured(&t.events, ranks, TIMELINE_STEPS))
}

fn timelines(i: &Inputs) -> String {
    let mut s = String::from("<h2>Timeline</h2>");
    s.push_str(&timeline::legend());
    match measured(i) {
        Some((lanes, span)) => {
            let _ = write!(
                s,
                "<p>Measured: the last {TIMELINE_STEPS} steps of the trace ({span:.1} ms).</p>{}",
                timeline::svg("timeline-measured", &lanes, span)
            );
        }
        None => s.push_str(r#"<p class="note">No trace: train with --trace FILE and pass it with --trace to see the measured timeline.</p>"#),
    }
    match i.plan {
        Some(p) => {
            let (lanes, span) = timeline::predicted(&p.sim);
            let _ = write!(
                s,
                "<p>Predicted by the simulator: one step ({span:.1} ms, {} costs).</p>{}",
                if p.plan.measured_costs { "profiled" } else { "estimated" },
                timeline::svg("timeline-predicted", &lanes, span)
            );
        }
        None => s.push_str(r#"<p class="note">No plan: pass --plan (a topology or `brigade plan --out` file) to see the prediction.</p>"#),
    }
    s
}

fn ranks_table(i: &Inputs) -> String {
    let measured = measured(i).map(|(lanes, span)| timeline::idle_fractions(&lanes, span));
    let rss = i
        .trace
        .as_ref()
        .map(|t| t.peak_rss_mib.clone())
        .unwrap_or_default();
    let plan_mem = |r: usize| -> Option<f64> {
        let p = i.plan?;
        let bytes: u64 = p
            .plan
            .stages
            .iter()
            .enumerate()
            .filter(|(c, _)| p.chunk_rank[*c] == r)
            .map(|(_, st)| st.memory_bytes)
            .sum();
        Some(bytes as f64 / (1 << 20) as f64)
    };
    let n = i
        .plan
        .map(|p| p.sim.stages.len())
        .or(measured.as_ref().map(Vec::len))
        .unwrap_or(0);
    let mut s = String::from(
        r#"<h2>Ranks</h2><table id="ranks"><tr><th>rank</th><th>bubble, measured</th><th>bubble, predicted</th><th>peak memory, measured</th><th>memory, predicted</th></tr>"#,
    );
    let cell = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for r in 0..n {
        let _ = write!(
            s,
            "<tr><td>{r}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(
                measured
                    .as_ref()
                    .and_then(|m| m.get(r))
                    .map(|f| format!("{:.1} %", f * 100.0))
            ),
            cell(
                i.plan
                    .and_then(|p| p.sim.stages.get(r))
                    .map(|st| format!("{:.1} %", st.bubble_fraction * 100.0))
            ),
            cell(
                rss.iter()
                    .find(|x| x.0 == r)
                    .map(|x| format!("{:.1} MiB RSS", x.1))
            ),
            cell(plan_mem(r).map(|m| format!("{m:.1} MiB"))),
        );
    }
    s.push_str("</table>");
    if n == 0 {
        s.push_str(r#"<p class="note">Pass --trace or --plan to see the ranks.</p>"#);
    }
    s
}

fn stages_table(i: &Inputs) -> String {
    let Some(p) = i.plan else {
        return String::new();
    };
    let mut s = format!(
        r#"<h2>Plan</h2><p>Predicted step {:.2} ms, bubble {:.1} %, speed-up {:.2}× over one device.</p><table id="stages"><tr><th>chunk</th><th>rank</th><th class="l">host:device</th><th>layers</th><th class="l">kinds</th><th>params</th><th>forward ms</th><th>backward ms</th><th>memory MiB</th><th>sends KiB</th></tr>"#,
        p.plan.step_ms,
        p.plan.bubble_fraction * 100.0,
        p.plan.speedup
    );
    for (c, st) in p.plan.stages.iter().enumerate() {
        let _ = write!(
            s,
            r#"<tr><td>{c}</td><td>{}</td><td class="l">{}:{}</td><td>{}–{}</td><td class="l">{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.1}</td><td>{:.1}</td></tr>"#,
            p.chunk_rank[c],
            esc(&st.host),
            esc(&st.device),
            st.layers[0],
            st.layers[1].saturating_sub(1),
            esc(&st.kinds.join(", ")),
            st.params,
            st.forward_ms,
            st.backward_ms,
            st.memory_bytes as f64 / (1 << 20) as f64,
            st.send_bytes as f64 / 1024.0
        );
    }
    s.push_str("</table>");
    s
}
