//! Run tracking on an MLflow server (`[tracking] mlflow`, `--mlflow`): the experiment, a run,
//! the topology's keys and the plan's summary as params, every step's and evaluation's figures
//! as metrics, the run's files as artifacts, and its end (FINISHED, FAILED with the cause,
//! KILLED). Only the process that writes the metrics file tracks. A server that is down or
//! answers errors never stops training: see [`worker`].

pub(crate) mod http;
pub mod mlflow;
mod outbox;
mod params;
pub mod signals;
#[cfg(test)]
mod tests;
mod worker;

use crate::metrics::{EvalMetrics, StepMetrics};
use crossbeam_channel::Sender;
use mlflow::{Metric, Status};
pub use outbox::Setup;
pub use params::{params, tags};
use std::time::{Duration, Instant};
use worker::{Msg, now_ms};

/// Where to track: `--mlflow` over the topology's `[tracking]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub uri: String,
    pub experiment: String,
    pub run_name: Option<String>,
}

impl Target {
    /// The target for `topo` with `--mlflow URI` (checked), if tracking is asked for.
    pub fn resolve(
        topo: &brigade_partitioner::Topology,
        flag: Option<&str>,
    ) -> anyhow::Result<Option<Target>> {
        let Some(uri) = flag.or(topo.tracking.mlflow.as_deref()) else {
            return Ok(None);
        };
        if let Err(why) = brigade_partitioner::Tracking::check_uri(uri) {
            return Err(crate::launcher::BadInput(format!(
                "--mlflow: {why}; give the tracking server's address, e.g. http://mlflow.example:5000"
            ))
            .into());
        }
        Ok(Some(Target {
            uri: uri.trim_end_matches('/').to_string(),
            experiment: topo
                .tracking
                .experiment
                .clone()
                .unwrap_or_else(|| topo.name.clone()),
            run_name: topo.tracking.run_name.clone(),
        }))
    }
}

/// A run being tracked; [`Tracker::finish`] ends it.
pub struct Tracker {
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the trainer holds to log (cheap to clone; never blocks).
#[derive(Clone)]
pub struct TrackerHandle {
    tx: Sender<Msg>,
}

impl Tracker {
    /// Starts tracking on its own thread; the run is created there, so a server that is
    /// down delays nothing.
    pub fn start(
        target: &Target,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> Tracker {
        let setup = Setup {
            experiment: target.experiment.clone(),
            run_name: target.run_name.clone(),
            resume_run: std::env::var("MLFLOW_RUN_ID")
                .ok()
                .filter(|r| !r.is_empty()),
            tags,
            params,
            start_ms: now_ms(),
        };
        let server = http::Server::new(&target.uri);
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("mlflow".into())
            .spawn(move || worker::run(server, setup, rx))
            .expect("cannot start the tracking thread");
        Tracker {
            tx,
            thread: Some(thread),
        }
    }

    pub fn handle(&self) -> TrackerHandle {
        TrackerHandle {
            tx: self.tx.clone(),
        }
    }

    /// Uploads `files` that exist, ends the run with `status` (and `cause` as the
    /// `brigade.failure` tag), and waits until the server has it all or
    /// BRIGADE_MLFLOW_FLUSH_SECS (default 10) have passed.
    pub fn finish(mut self, status: Status, cause: Option<String>, files: &[String]) {
        for f in files.iter().filter(|f| std::path::Path::new(f).is_file()) {
            let _ = self.tx.send(Msg::Artifact(f.clone()));
        }
        if let Some(c) = cause {
            self.handle().tag("brigade.failure", &c);
        }
        self.handle().end(status, flush_time());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the end waits for an absent server.
fn flush_time() -> Duration {
    let secs = std::env::var("BRIGADE_MLFLOW_FLUSH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

impl TrackerHandle {
    /// One training step's figures.
    pub fn step(&self, m: &StepMetrics) {
        let mut values = vec![
            ("loss", m.loss),
            ("step_ms", m.step_ms),
            ("samples_per_sec", m.samples_per_sec),
        ];
        values.extend(m.lr.map(|v| ("lr", v)));
        values.extend(m.grad_norm.map(|v| ("grad_norm", v)));
        self.values(m.step, &values);
    }

    /// One evaluation's figures.
    pub fn eval(&self, m: &EvalMetrics) {
        let mut values = vec![("val_loss", m.val_loss)];
        values.extend(m.val_accuracy.map(|v| ("val_accuracy", v)));
        self.values(m.step, &values);
    }

    fn values(&self, step: u64, values: &[(&str, f64)]) {
        let timestamp = now_ms();
        let ms = values
            .iter()
            .map(|(k, v)| Metric {
                key: k.to_string(),
                value: *v,
                timestamp,
                step,
            })
            .collect();
        let _ = self.tx.send(Msg::Metrics(ms));
    }

    pub fn tag(&self, key: &str, value: &str) {
        let _ = self.tx.send(Msg::Tag(key.into(), value.into()));
    }

    /// Ends the run and waits (at most `flush` and a call's time-out) for the worker to settle.
    pub fn end(&self, status: Status, flush: Duration) {
        let (done, wait) = crossbeam_channel::bounded(1);
        let msg = Msg::End {
            status,
            end_ms: now_ms(),
            deadline: Instant::now() + flush,
            done,
        };
        if self.tx.send(msg).is_ok() {
            let _ = wait.recv_timeout(flush + Duration::from_secs(12));
        }
    }
}

/// Starts tracking `job` (its params and tags, brigade's run id `run_id`) when `--mlflow` or
/// `[tracking] mlflow` asks for it; SIGINT and SIGTERM then end the run KILLED.
pub fn start_job(
    job: &crate::job::Job,
    run_id: u64,
    flag: Option<&str>,
) -> anyhow::Result<Option<Tracker>> {
    let Some(target) = Target::resolve(&job.topo, flag)? else {
        return Ok(None);
    };
    crate::note!(
        "mlflow: tracking to {}, experiment \"{}\"",
        target.uri,
        target.experiment
    );
    let tracker = Tracker::start(&target, params(job), tags(job, run_id));
    signals::watch(tracker.handle());
    Ok(Some(tracker))
}

/// Ends a tracked run: uploads the plan (as plan.json) and `files`, and sets its status —
/// KILLED after a stop signal, FAILED with `failure` as the cause, else FINISHED.
pub fn end_job(tracker: Tracker, job: &crate::job::Job, files: &[String], failure: Option<String>) {
    let (status, cause) = match (signals::received(), failure) {
        (Some(sig), _) => (
            Status::Killed,
            Some(format!("stopped by {}", signals::name(sig))),
        ),
        (None, None) => (Status::Finished, None),
        (None, Some(why)) => (Status::Failed, Some(why)),
    };
    let dir = std::env::temp_dir().join(format!("brigade-mlflow-{}", std::process::id()));
    let plan = dir.join("plan.json");
    let mut all: Vec<String> = Vec::new();
    if std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&plan, job.to_json()))
        .is_ok()
    {
        all.push(plan.to_string_lossy().into_owned());
    }
    all.extend(files.iter().cloned());
    tracker.finish(status, cause, &all);
    let _ = std::fs::remove_dir_all(&dir);
}
