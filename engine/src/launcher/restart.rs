//! `brigade train --max-restarts N`: when a rank dies, hangs or loses its peer, the launcher
//! has already stopped every rank (see `launch`); it then waits a back-off, and starts them all
//! again from the newest complete checkpoint, up to N times. The metrics file continues: lines
//! past the resumed step are dropped (the rerun writes them again) and a
//! `{"step", "restart", "cause"}` line records each restart. Bad input is never retried.

use super::failure::BadInput;
use super::spec::{LaunchReport, LaunchSpec};
use super::supervisor::launch;
use crate::identity::fresh_run_id;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// How to restart.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    /// The first back-off; doubled after each restart, at most 30 s.
    pub backoff: Duration,
    /// Where the ranks checkpoint (resume point); without it a restart starts from step 0.
    pub checkpoint_dir: Option<String>,
}

/// [`launch`], restarted on failure as `policy` allows.
/// `replan`: before each restart, the job as it should run now (elastic: the topology
/// re-read, so devices taken out of it are gone); `None` keeps the job.
pub fn launch_with_restarts(
    spec: &mut LaunchSpec,
    policy: &RestartPolicy,
    replan: &mut dyn FnMut() -> Result<Option<LaunchSpec>>,
) -> Result<LaunchReport> {
    if policy.max_restarts == 0 {
        return launch(spec);
    }
    let mut causes: Vec<String> = Vec::new();
    let layers = spec.job.topo.model.layers.len();
    for attempt in 0..=policy.max_restarts {
        let err = match launch(spec) {
            Ok(report) => return Ok(report),
            Err(e) if e.is::<BadInput>() => return Err(e),
            Err(e) => e,
        };
        causes.push(format!("{err:#}"));
        if attempt == policy.max_restarts {
            break;
        }
        let resume = policy
            .checkpoint_dir
            .as_deref()
            .and_then(|d| brigade_stages::checkpoint::latest(Path::new(d), layers))
            .map_or(0, |(step, _)| step);
        if let Some(new) = replan()? {
            if new.job.hash != spec.job.hash {
                crate::note!(
                    "re-planned for the restart: {} ranks (was {}): {}",
                    new.total_stages,
                    spec.total_stages,
                    new.job
                        .plan
                        .ranks
                        .iter()
                        .map(|r| format!(
                            "rank {} {}:{} chunks {:?}",
                            r.rank, r.host, r.device_kind, r.chunks
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let (metrics, extra) = (spec.metrics.clone(), spec.extra_args.clone());
            let (report, tracker) = (spec.report.clone(), spec.tracker.clone());
            *spec = new;
            spec.metrics = metrics;
            spec.extra_args = extra;
            spec.report = report;
            spec.tracker = tracker;
        }
        let wait = backoff(policy, attempt);
        let cause = causes.last().expect("pushed above");
        // A new run id: messages of the stopped ranks can never reach the new ones.
        spec.run_id = fresh_run_id();
        crate::note!(
            "restart {}/{} in {:.1} s from step {resume} (run {:016x}) after: {cause}",
            attempt + 1,
            policy.max_restarts,
            wait.as_secs_f64(),
            spec.run_id,
        );
        if let Some(t) = &spec.tracker {
            t.tag(
                &format!("brigade.restart.{}", attempt + 1),
                &format!("from step {resume} after: {cause}"),
            );
        }
        if let Some(m) = &spec.metrics {
            continue_metrics(m, resume, attempt + 1, cause)?;
            spec.append_metrics = true;
        }
        if policy.checkpoint_dir.is_some() && !spec.extra_args.iter().any(|a| a == "--resume") {
            spec.extra_args.push("--resume".into());
        }
        std::thread::sleep(wait);
    }
    Err(causes_error(
        &causes,
        policy,
        anyhow::anyhow!("no restarts left"),
    ))
}

/// The back-off before restart `attempt + 1`: doubled after each, at most 30 s.
pub(super) fn backoff(policy: &RestartPolicy, attempt: u32) -> Duration {
    (policy.backoff * 2u32.saturating_pow(attempt)).min(Duration::from_secs(30))
}

/// The job's end after failures: every attempt's cause, then `last` (what ended it).
pub(super) fn causes_error(
    causes: &[String],
    policy: &RestartPolicy,
    last: anyhow::Error,
) -> anyhow::Error {
    if causes.is_empty() {
        return last;
    }
    let list: Vec<String> = causes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("attempt {}: {c}", i + 1))
        .collect();
    anyhow::anyhow!(
        "the job failed {} times ({} restarts allowed): {}; {last:#}",
        causes.len(),
        policy.max_restarts,
        list.join("; ")
    )
}

/// Keeps the metrics lines up to step `resume` and records the restart.
pub(super) fn continue_metrics(path: &str, resume: u64, attempt: u32, cause: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut kept: Vec<String> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= resume)
        })
        .map(str::to_string)
        .collect();
    kept.push(serde_json::json!({"step": resume, "restart": attempt, "cause": cause}).to_string());
    std::fs::write(path, kept.join("\n") + "\n")
        .with_context(|| format!("{path}: cannot rewrite the metrics file for the restart"))
}
