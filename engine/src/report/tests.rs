//! The page from made-up inputs: every chart and lane is there, and bad files name their line.

use super::{Inputs, Metrics, Trace, render};
use crate::metrics::{EvalMetrics, StepMetrics};
use crate::trace::{TraceArgs, TraceEvent};

fn span(name: &str, rank: u64, step: u64, ts: u64, dur: u64) -> TraceEvent {
    TraceEvent {
        name: name.into(),
        ph: "X".into(),
        ts,
        dur,
        pid: rank,
        tid: u64::from(name == "send" || name == "recv"),
        args: TraceArgs {
            step,
            mb: 0,
            edge: None,
            peer: None,
            bytes: None,
            algo: None,
        },
    }
}

fn metrics() -> Metrics {
    Metrics {
        steps: (1..=20)
            .map(|s| StepMetrics {
                step: s,
                loss: 2.0 / s as f64,
                step_ms: 10.0,
                samples_per_sec: 100.0 + s as f64,
                lr: Some(0.1),
                grad_norm: None,
            })
            .collect(),
        evals: vec![EvalMetrics {
            step: 20,
            val_loss: 0.2,
            val_accuracy: Some(0.9),
        }],
        restarts: vec![(10, "rank 1 died".into())],
    }
}

#[test]
fn the_page_has_every_chart_and_a_lane_per_rank() {
    let events: Vec<TraceEvent> = (1..=5)
        .flat_map(|s| {
            let t = s * 1000;
            [
                span("forward", 0, s, t, 100),
                span("send", 0, s, t + 100, 50),
                span("forward", 1, s, t + 150, 100),
                span("backward", 1, s, t + 250, 200),
                span("backward", 0, s, t + 500, 200),
                span("optimizer", 0, s, t + 700, 10),
            ]
        })
        .collect();
    let trace = Trace {
        events,
        peak_rss_mib: vec![(0, 70.5), (1, 60.0)],
    };
    let html = render(&Inputs {
        metrics_file: "m.jsonl",
        metrics: metrics(),
        trace: Some(trace),
        plan: None,
        live: true,
    });
    for id in [
        "chart-loss",
        "chart-throughput",
        "chart-lr",
        "chart-accuracy",
        "timeline-measured",
        "ranks",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert!(!html.contains("id=\"chart-grad-norm\""));
    assert_eq!(html.matches("class=\"lane\"").count(), 2);
    assert!(html.contains("70.5 MiB RSS"));
    assert!(html.contains("http-equiv=\"refresh\""));
    assert!(html.contains("restart from step 10"));
    // No script, nothing fetched.
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
}

#[test]
fn bad_files_name_their_line() {
    let dir = std::env::temp_dir().join(format!("brigade-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = dir.join("m.jsonl");
    std::fs::write(&m, "{\"step\": 1, \"loss\": 1.0, \"step_ms\": 1, \"samples_per_sec\": 1}\n{\"step\": 2, \"loss\":\n").unwrap();
    let e = super::metrics(m.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("m.jsonl:2: not a metrics line"), "{e}");
    std::fs::write(&m, "{\"step\": 1, \"other\": 1}\n").unwrap();
    let e = super::metrics(m.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("m.jsonl:1:") && e.contains("no \"loss\""), "{e}");
    let t = dir.join("t.json");
    std::fs::write(&t, "{\"traceEvents\": [\n{\"ph\": \"X\",\n").unwrap();
    let e = super::trace(t.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("t.json:3: not a trace"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
