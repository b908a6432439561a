//! The supervisor: starts a launch's ranks through a [`Spawner`], reads their [`StageEvent`]s
//! into progress and metrics ([`Progress`]), and — if any rank fails — stops every other rank
//! at once and reports which failed, on which host, and why ([`Blame`], `describe_failure`).

use super::failure::{BadInput, Blame, describe_failure};
use super::progress::Progress;
use super::ranks::{RankError, Running, find, find_mut};
use super::spawn::{Event, LocalSpawner, Spawner};
use super::spec::{LaunchReport, LaunchSpec};
use crate::endpoints::{create_run_dir, ipc_files, run_dir};
use crate::events::StageEvent;
use crate::metrics::EvalMetrics;
use crate::trace::{TraceEvent, metadata};
use anyhow::{Context, Result, bail};
use crossbeam_channel::Receiver;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// Starts the stages as child processes of this one and waits for them; `Ok` only if every one
/// finished every step.
pub fn launch(spec: &LaunchSpec) -> Result<LaunchReport> {
    supervise(spec, &mut LocalSpawner::new()?)
}

/// [`launch`] through any spawner.
pub fn supervise(spec: &LaunchSpec, spawner: &mut dyn Spawner) -> Result<LaunchReport> {
    let dir = create_run_dir(spec.run_id)
        .with_context(|| format!("cannot create {}", run_dir(spec.run_id).display()))?;
    // Launchers of other hosts may share this directory (one machine in tests): a file of our own.
    let plan_file = dir.join(format!("job-{}.json", std::process::id()));
    let tmp = plan_file.with_extension("tmp");
    std::fs::write(&tmp, spec.job.to_json())
        .and_then(|()| std::fs::rename(&tmp, &plan_file))
        .with_context(|| format!("cannot write the job plan to {}", plan_file.display()))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut running: Vec<Running> = Vec::new();
    for (k, host) in &spec.stages {
        match spawner.spawn(*k, &stage_args(spec, *k, &plan_file, &dir), tx.clone()) {
            Ok(spawned) => running.push(Running {
                stage: *k,
                host: host.clone(),
                spawned,
                status: None,
                done: false,
                error: None,
            }),
            Err(e) => {
                kill_all(spawner, &running);
                bail!("cannot start stage {k}: {e}");
            }
        }
    }
    drop(tx);
    let mut watch = Watch {
        spawner,
        running,
        progress: Progress::start(spec)?,
        blame: Blame::default(),
        failure: None,
        bad_input: false,
    };
    watch.run(&rx)?;
    let Watch {
        progress,
        failure,
        bad_input,
        ..
    } = watch;
    let mut report = progress.finish();
    let merged = match (&failure, &spec.trace) {
        (None, Some(path)) => merge_traces(spec, &dir, path, &report.peak_rss_kib),
        _ => Ok(()),
    };
    clean_up(spec, &dir, &plan_file);
    if let Some(f) = failure {
        if bad_input {
            return Err(BadInput(f).into());
        }
        bail!("{f}");
    }
    report.peak_rss_kib.sort();
    merged.map(|()| report)
}

/// The arguments of `brigade stage` for rank `k`.
fn stage_args(spec: &LaunchSpec, k: usize, plan_file: &Path, dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![plan_file.into(), "--stage".into(), k.to_string().into()];
    let mut pair = |flag: &str, value: OsString| a.extend([flag.into(), value]);
    pair("--plan-source", spec.file.clone().into());
    pair("--steps", spec.steps.to_string().into());
    pair("--run-id", format!("{:016x}", spec.run_id).into());
    pair("--launcher-pid", std::process::id().to_string().into());
    pair("--peer-timeout", spec.peer_timeout.to_string().into());
    pair("--connect-timeout", spec.connect_timeout.to_string().into());
    if spec.local {
        a.push("--local".into());
    }
    if spec.trace.is_some() {
        a.extend([
            "--trace-out".into(),
            dir.join(format!("trace-{k}.json")).into(),
        ]);
    }
    if let Some(p) = &spec.save_params {
        a.extend(["--save-params".into(), p.into()]);
    }
    a.extend(spec.extra_args.iter().map(OsString::from));
    a
}

/// The ranks while they run.
struct Watch<'s> {
    spawner: &'s mut dyn Spawner,
    running: Vec<Running>,
    progress: Progress,
    blame: Blame,
    /// Why the launch failed, once it did.
    failure: Option<String>,
    /// The failed rank said its input was bad.
    bad_input: bool,
}

impl Watch<'_> {
    /// Reads events until every rank has exited, then decides whether the launch failed.
    fn run(&mut self, rx: &Receiver<Event>) -> Result<()> {
        while self.running.iter().any(|r| r.status.is_none()) {
            if let Some(k) = self.blame.due()
                && self.failure.is_none()
            {
                self.fail(k);
            }
            let Ok(ev) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            match ev {
                Event::Line(k, line) => self.line(k, &line)?,
                Event::Exit(k, status) => self.exit(k, status),
            }
        }
        // Every rank has exited. A suspect whose peer then finished cleanly, or any rank that
        // did not finish every step, still fails the launch.
        if self.failure.is_none()
            && let Some(k) = self.blame.at_end(&self.running)
        {
            self.fail(k);
        }
        Ok(())
    }

    fn line(&mut self, k: usize, line: &str) -> Result<()> {
        match StageEvent::parse(line) {
            None => self.progress.println(format!("[stage {k}] {line}")),
            Some(StageEvent::Step {
                step,
                loss,
                step_ms,
                grad_norm,
                ..
            }) => self.progress.step(k, step, (loss, grad_norm), step_ms)?,
            Some(StageEvent::Eval {
                step,
                val_loss,
                val_accuracy,
                ..
            }) => self.progress.eval(
                k,
                EvalMetrics {
                    step,
                    val_loss,
                    val_accuracy,
                },
            )?,
            Some(StageEvent::Done {
                peak_rss_kib: kib, ..
            }) => {
                if let Some(kib) = kib {
                    self.progress.report.peak_rss_kib.push((k, kib));
                }
                if let Some(r) = find_mut(&mut self.running, k) {
                    r.done = true;
                }
            }
            Some(StageEvent::Error {
                message,
                bad_input,
                lost_peer,
                ..
            }) => {
                if let Some(r) = find_mut(&mut self.running, k) {
                    r.error = Some(RankError {
                        message,
                        bad_input,
                        lost_peer,
                    });
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn exit(&mut self, k: usize, status: std::io::Result<std::process::ExitStatus>) {
        let Some(r) = find_mut(&mut self.running, k) else {
            return;
        };
        r.status = Some(status.map_err(|e| e.to_string()));
        if !r.succeeded()
            && self.failure.is_none()
            && let Some(k) = self.blame.exited(&self.running, k)
        {
            self.fail(k);
        }
    }

    /// Rank `k`'s failure fails the launch: say why and stop every other rank.
    fn fail(&mut self, k: usize) {
        let r = find(&self.running, k);
        let failure = describe_failure(r);
        self.bad_input = r.error.as_ref().is_some_and(|e| e.bad_input);
        self.progress
            .println(format!("error: {failure}; stopping the other stages"));
        self.failure = Some(failure);
        kill_all(self.spawner, &self.running);
    }
}

fn kill_all(spawner: &dyn Spawner, running: &[Running]) {
    for r in running.iter().filter(|r| r.status.is_none()) {
        spawner.kill(&r.spawned);
    }
}

/// Removes what this launcher's stages wrote: another host's launcher may share the run
/// directory's name (same run id on one machine in tests).
fn clean_up(spec: &LaunchSpec, dir: &Path, plan_file: &Path) {
    let here: Vec<usize> = spec.stages.iter().map(|(k, _)| *k).collect();
    for k in &here {
        let _ = std::fs::remove_file(dir.join(format!("stage{k}.pid")));
        let _ = std::fs::remove_file(dir.join(format!("trace-{k}.json")));
    }
    for f in ipc_files(&here, dir) {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(plan_file);
    let _ = std::fs::remove_dir(dir);
}

/// One trace of every rank started here, each rank's peak memory as a `peak_rss` counter.
fn merge_traces(spec: &LaunchSpec, dir: &Path, out: &str, rss_kib: &[(usize, u64)]) -> Result<()> {
    let mut all: Vec<serde_json::Value> = metadata(spec.total_stages);
    let end = crate::trace::now_us();
    all.extend(rss_kib.iter().map(|(k, kib)| {
        serde_json::json!({"name": "peak_rss", "ph": "C", "pid": k, "tid": 0, "ts": end, "args": {"MiB": *kib as f64 / 1024.0}})
    }));
    for (k, _) in &spec.stages {
        let path = dir.join(format!("trace-{k}.json"));
        let events: Vec<TraceEvent> = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("stage {k} wrote no trace"))?,
        )?;
        all.extend(
            events
                .into_iter()
                .map(|e| serde_json::to_value(e).expect("serialisable")),
        );
    }
    std::fs::write(
        out,
        serde_json::to_vec(&serde_json::json!({"traceEvents": all, "displayTimeUnit": "ms"}))?,
    )
    .with_context(|| format!("{out}: cannot write the trace"))?;
    Ok(())
}
