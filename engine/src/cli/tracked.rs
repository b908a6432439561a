//! What `train` and `launch` do around a run for the people watching it: MLflow tracking
//! (started before the ranks, ended after them with the run's files and its outcome) and the
//! final HTML report.

use crate::launcher::LaunchSpec;
use crate::report::{self, Inputs};
use crate::tracking::{self, Tracker};
use anyhow::Result;

/// Starts tracking `spec`'s run when asked (`--mlflow`, `[tracking] mlflow`) and this process
/// writes the metrics (it runs the last rank); hands the trainer its handle.
pub fn start(spec: &mut LaunchSpec, flag: Option<&str>) -> Result<Option<Tracker>> {
    if !spec.stages.iter().any(|(k, _)| *k == spec.last_stage) {
        return Ok(None);
    }
    let tracker = tracking::start_job(&spec.job, spec.run_id, flag)?;
    spec.tracker = tracker.as_ref().map(Tracker::handle);
    Ok(tracker)
}

/// After the run: the final report (if asked), then the tracked run's files and end.
pub fn finish(spec: &LaunchSpec, tracker: Option<Tracker>, result: &Result<()>) {
    let runs_last = spec.stages.iter().any(|(k, _)| *k == spec.last_stage);
    if let (Some(out), Some(m), true) = (&spec.report, &spec.metrics, runs_last) {
        let trace = spec
            .trace
            .as_deref()
            .filter(|t| std::path::Path::new(t).is_file());
        match write_report(out, m, trace, spec, false) {
            Ok(()) => crate::note!("report: {out}"),
            Err(e) => crate::note!("warning: {e:#}"),
        }
    }
    if let Some(tracker) = tracker {
        let files: Vec<String> = [&spec.metrics, &spec.trace, &spec.report]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let failure = result.as_ref().err().map(|e| format!("{e:#}"));
        tracking::end_job(tracker, &spec.job, &files, failure);
    }
}

/// Writes the report of the run so far (`live`: it goes on, the page reloads itself).
pub fn write_report(
    out: &str,
    metrics: &str,
    trace: Option<&str>,
    spec: &LaunchSpec,
    live: bool,
) -> Result<()> {
    let plan = crate::job::explain(&spec.job, None)?;
    let inputs = Inputs {
        metrics_file: metrics,
        metrics: report::metrics(metrics)?,
        trace: trace.map(report::trace).transpose()?,
        plan: Some(&plan),
        live,
    };
    report::write(out, &report::render(&inputs))
}
