//! The report's inputs, read strictly: every line of the metrics file must be one of its kinds
//! and the trace must be a Chrome trace, or the error names the file and line.

use crate::launcher::BadInput;
use crate::metrics::{EvalMetrics, StepMetrics};
use crate::trace::TraceEvent;
use serde::Deserialize;

/// A metrics file's lines, by kind.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub steps: Vec<StepMetrics>,
    pub evals: Vec<EvalMetrics>,
    /// (step resumed from, cause) of each restart.
    pub restarts: Vec<(u64, String)>,
}

#[derive(Deserialize)]
struct Restart {
    step: u64,
    #[allow(dead_code)]
    restart: u64,
    #[serde(default)]
    cause: String,
}

/// Reads the metrics file at `path`.
pub fn metrics(path: &str) -> Result<Metrics, BadInput> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("{path}: cannot read the metrics file: {e}")))?;
    let mut m = Metrics::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            BadInput(format!(
                "{path}:{}: not a metrics line ({why}); the file should hold the JSON lines `train --metrics` or `reference --metrics` writes",
                i + 1
            ))
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if v.get("loss").is_some() {
            m.steps
                .push(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?);
        } else if v.get("val_loss").is_some() {
            m.evals
                .push(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?);
        } else if v.get("restart").is_some() {
            let r: Restart = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
            m.restarts.push((r.step, r.cause));
        } else {
            return Err(bad("no \"loss\", \"val_loss\" or \"restart\" key".into()));
        }
    }
    Ok(m)
}

/// A trace's complete events and each rank's peak memory (MiB), if recorded.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub events: Vec<TraceEvent>,
    pub peak_rss_mib: Vec<(usize, f64)>,
}

/// Reads the Chrome trace at `path` (`{"traceEvents": [...]}` or a bare array).
pub fn trace(path: &str) -> Result<Trace, BadInput> {
    let bytes =
        std::fs::read(path).map_err(|e| BadInput(format!("{path}: cannot read the trace: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        BadInput(format!(
            "{path}:{}: not a trace ({e}); give the file `train --trace` wrote",
            e.line()
        ))
    })?;
    let list = match &v {
        serde_json::Value::Array(a) => a,
        v => v["traceEvents"].as_array().ok_or_else(|| {
            BadInput(format!(
                "{path}: not a trace: no \"traceEvents\" list; give the file `train --trace` wrote"
            ))
        })?,
    };
    let mut t = Trace::default();
    for (i, e) in list.iter().enumerate() {
        match e["ph"].as_str() {
            Some("X") => t
                .events
                .push(serde_json::from_value(e.clone()).map_err(|err| {
                    BadInput(format!(
                        "{path}: trace event {i}: not a brigade span ({err})"
                    ))
                })?),
            Some("C") if e["name"] == "peak_rss" => {
                if let (Some(pid), Some(mib)) = (e["pid"].as_u64(), e["args"]["MiB"].as_f64()) {
                    t.peak_rss_mib.push((pid as usize, mib));
                }
            }
            _ => {}
        }
    }
    Ok(t)
}
