//! Starting stage processes on this host and watching them: the embedded launcher behind
//! `brigade train` (every stage) and `brigade launch --host NAME` (that host's stages).
//!
//! The launcher plans once: it writes the job plan into the run directory and hands that file
//! to every rank, a child `brigade stage` process. It reads their [`StageEvent`]s, shows
//! progress, writes metrics from the rank holding the last chunk, and — if any rank fails —
//! stops every other rank at once and reports which failed, on which host, and why (in the
//! rank's own words, from its `error` event). Children die with the launcher
//! (PR_SET_PDEATHSIG), so nothing is left behind.

pub mod agent;
mod failure;
mod restart;

pub use failure::BadInput;
use failure::{BLAME_GRACE, RankError, describe_failure};
pub use restart::{RestartPolicy, launch_with_restarts};

use crate::endpoints::{create_run_dir, ipc_files, run_dir};
use crate::events::StageEvent;
use crate::job::Job;
use crate::metrics::{EvalMetrics, MetricsWriter, StepMetrics};
use crate::trace::{TraceEvent, metadata};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What to start.
pub struct LaunchSpec {
    /// The file the user gave (for messages).
    pub file: String,
    /// The plan every rank runs.
    pub job: Job,
    /// Ranks to run here, with the host each belongs to.
    pub stages: Vec<(usize, String)>,
    pub total_stages: usize,
    /// The rank holding the last chunk (it reports the loss).
    pub last_stage: usize,
    pub steps: u64,
    pub batch: usize,
    /// `--run-id` passed to every stage.
    pub run_id: u64,
    pub local: bool,
    pub metrics: Option<String>,
    /// Append to the metrics file instead of starting it (after a restart).
    pub append_metrics: bool,
    pub trace: Option<String>,
    pub save_params: Option<String>,
    pub peer_timeout: u64,
    pub connect_timeout: u64,
    /// More arguments for every stage (checkpointing).
    pub extra_args: Vec<String>,
}

enum Event {
    Line(usize, String),
    Exit(usize, std::io::Result<ExitStatus>),
}

struct Running {
    stage: usize,
    host: String,
    pid: u32,
    status: Option<Result<ExitStatus, String>>,
    done: bool,
    stderr_tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
    /// The rank's own account of its failure (its `error` event).
    error: Option<RankError>,
}

/// What a finished launch reports.
#[derive(Debug, Clone, Default)]
pub struct LaunchReport {
    /// The last step's metrics (when this host runs the last stage).
    pub last: Option<StepMetrics>,
    /// The last evaluation's figures (when this host runs the last stage).
    pub last_eval: Option<EvalMetrics>,
    /// Peak resident memory of each stage process started here, KiB.
    pub peak_rss_kib: Vec<(usize, u64)>,
}

/// Starts the stages and waits for them; `Ok` only if every one finished every step.
pub fn launch(spec: &LaunchSpec) -> Result<LaunchReport> {
    let exe = std::env::current_exe().context("cannot find the brigade executable")?;
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
        let mut cmd = Command::new(&exe);
        cmd.arg("stage")
            .arg(&plan_file)
            .arg("--stage")
            .arg(k.to_string());
        cmd.arg("--plan-source").arg(&spec.file);
        cmd.arg("--steps").arg(spec.steps.to_string());
        cmd.arg("--run-id").arg(format!("{:016x}", spec.run_id));
        cmd.arg("--launcher-pid")
            .arg(std::process::id().to_string());
        cmd.arg("--peer-timeout").arg(spec.peer_timeout.to_string());
        cmd.arg("--connect-timeout")
            .arg(spec.connect_timeout.to_string());
        if spec.local {
            cmd.arg("--local");
        }
        if spec.trace.is_some() {
            cmd.arg("--trace-out")
                .arg(dir.join(format!("trace-{k}.json")));
        }
        if let Some(p) = &spec.save_params {
            cmd.arg("--save-params").arg(p);
        }
        cmd.args(&spec.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                kill_all(&running);
                bail!("cannot start stage {k}: {e}");
            }
        };
        let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
        forward_stderr(*k, &mut child, tail.clone());
        running.push(Running {
            stage: *k,
            host: host.clone(),
            pid: child.id(),
            status: None,
            done: false,
            stderr_tail: tail,
            error: None,
        });
        let tx = tx.clone();
        let k = *k;
        // Events first, then the exit: a stage's last event is never read after its exit.
        std::thread::spawn(move || {
            if let Some(out) = child.stdout.take() {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(Event::Line(k, line));
                }
            }
            let status = child.wait();
            let _ = tx.send(Event::Exit(k, status));
        });
    }
    drop(tx);

    let last_stage = spec.last_stage;
    let shows_loss = spec.stages.iter().any(|(k, _)| *k == last_stage);
    let mut metrics = match (&spec.metrics, shows_loss) {
        (Some(p), true) => Some(
            if spec.append_metrics {
                MetricsWriter::append(p)
            } else {
                MetricsWriter::create(p)
            }
            .with_context(|| format!("{p}: cannot create the metrics file"))?,
        ),
        _ => None,
    };
    let bar = progress(spec.steps);
    let mut failure: Option<String> = None;
    let mut bad_input = false;
    let mut last: Option<StepMetrics> = None;
    let mut last_eval: Option<EvalMetrics> = None;
    let mut peak_rss_kib = Vec::new();
    // A rank that failed because it lost a peer still running here: (rank, until when its
    // peer may still exit and take the blame).
    let mut suspect: Option<(usize, Instant)> = None;
    let mut fail = |r: &Running, running: &[Running], failure: &mut Option<String>| {
        *failure = Some(describe_failure(r));
        bad_input = r.error.as_ref().is_some_and(|e| e.bad_input);
        bar.println(format!(
            "error: {}; stopping the other stages",
            failure.as_deref().unwrap_or_default()
        ));
        kill_all(running);
    };
    while running.iter().any(|r| r.status.is_none()) {
        if let Some((k, until)) = suspect
            && Instant::now() >= until
        {
            suspect = None;
            if failure.is_none() {
                let r = running
                    .iter()
                    .find(|r| r.stage == k)
                    .expect("a started stage");
                fail(r, &running, &mut failure);
            }
        }
        let Ok(ev) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match ev {
            Event::Line(k, line) => match StageEvent::parse(&line) {
                None => bar.println(format!("[stage {k}] {line}")),
                Some(StageEvent::Step {
                    step,
                    loss,
                    step_ms,
                    ..
                }) if k == last_stage => {
                    let m = StepMetrics {
                        step,
                        loss: loss.unwrap_or(f64::NAN),
                        step_ms,
                        samples_per_sec: spec.batch as f64 / (step_ms / 1e3).max(1e-9),
                    };
                    bar.set_position(m.step);
                    bar.set_message(format!(
                        "loss {:.4}  {:.0} samples/s",
                        m.loss, m.samples_per_sec
                    ));
                    last = Some(m.clone());
                    if let Some(w) = metrics.as_mut() {
                        w.write(&m)
                            .with_context(|| format!("{}: cannot write metrics", w.path()))?;
                    }
                }
                Some(StageEvent::Step { step, .. }) if !shows_loss => bar.set_position(step),
                Some(StageEvent::Eval {
                    step,
                    val_loss,
                    val_accuracy,
                    ..
                }) if k == last_stage => {
                    let m = EvalMetrics {
                        step,
                        val_loss,
                        val_accuracy,
                    };
                    bar.println(format!(
                        "step {step}: {}",
                        crate::metrics::describe_eval(&m)
                    ));
                    last_eval = Some(m);
                    if let Some(w) = metrics.as_mut() {
                        w.write_eval(&m)
                            .with_context(|| format!("{}: cannot write metrics", w.path()))?;
                    }
                }
                Some(StageEvent::Done {
                    peak_rss_kib: kib, ..
                }) => {
                    if let Some(kib) = kib {
                        peak_rss_kib.push((k, kib));
                    }
                    if let Some(r) = running.iter_mut().find(|r| r.stage == k) {
                        r.done = true;
                    }
                }
                Some(StageEvent::Error {
                    message,
                    bad_input,
                    lost_peer,
                    ..
                }) => {
                    if let Some(r) = running.iter_mut().find(|r| r.stage == k) {
                        r.error = Some(RankError {
                            message,
                            bad_input,
                            lost_peer,
                        });
                    }
                }
                Some(_) => {}
            },
            Event::Exit(k, status) => {
                let r = running
                    .iter_mut()
                    .find(|r| r.stage == k)
                    .expect("a started stage");
                let ok = matches!(&status, Ok(s) if s.success()) && r.done;
                r.status = Some(status.map_err(|e| e.to_string()));
                if !ok && failure.is_none() {
                    let lost = r.error.as_ref().and_then(|e| e.lost_peer);
                    let peer_running = lost.is_some_and(|p| {
                        running.iter().any(|x| x.stage == p && x.status.is_none())
                    });
                    if peer_running {
                        // Wait for the peer: its own failure is the cause (the first rank
                        // that lost a peer stays the suspect).
                        suspect.get_or_insert((k, Instant::now() + BLAME_GRACE));
                    } else {
                        let r = running
                            .iter()
                            .find(|r| r.stage == k)
                            .expect("a started stage");
                        fail(r, &running, &mut failure);
                    }
                }
            }
        }
    }
    // Every rank has exited. A suspect whose peer then finished cleanly, or any rank that did
    // not finish every step, still fails the launch.
    if failure.is_none() {
        let first_bad = suspect.map(|(k, _)| k).or_else(|| {
            running
                .iter()
                .find(|r| !(r.done && matches!(&r.status, Some(Ok(s)) if s.success())))
                .map(|r| r.stage)
        });
        if let Some(k) = first_bad {
            let r = running
                .iter()
                .find(|r| r.stage == k)
                .expect("a started stage");
            fail(r, &running, &mut failure);
        }
    }
    bar.finish_and_clear();
    let merged = match (&failure, &spec.trace) {
        (None, Some(path)) => merge_traces(spec, &dir, path),
        _ => Ok(()),
    };
    // Another host's launcher may share this directory name (same run id on one machine in
    // tests): remove only what this launcher's stages wrote.
    let here: Vec<usize> = spec.stages.iter().map(|(k, _)| *k).collect();
    for k in &here {
        let _ = std::fs::remove_file(dir.join(format!("stage{k}.pid")));
        let _ = std::fs::remove_file(dir.join(format!("trace-{k}.json")));
    }
    for f in ipc_files(&here, &dir) {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(&plan_file);
    let _ = std::fs::remove_dir(&dir);
    if let Some(f) = failure {
        if bad_input {
            return Err(BadInput(f).into());
        }
        bail!("{f}");
    }
    peak_rss_kib.sort();
    merged.map(|()| LaunchReport {
        last,
        last_eval,
        peak_rss_kib,
    })
}

fn progress(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg}  ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Copies a child's stderr into ours, prefixed with its stage, keeping the last lines.
fn forward_stderr(
    k: usize,
    child: &mut Child,
    tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
) {
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                crate::note!("[stage {k}] {line}");
                let mut t = tail.lock().expect("tail lock");
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
}

fn kill_all(running: &[Running]) {
    for r in running.iter().filter(|r| r.status.is_none()) {
        // SAFETY: kill(2) on a child we started and have not reaped; at worst it is already dead.
        unsafe {
            libc::kill(r.pid as i32, libc::SIGKILL);
        }
    }
}

fn merge_traces(spec: &LaunchSpec, dir: &std::path::Path, out: &str) -> Result<()> {
    let mut all: Vec<serde_json::Value> = metadata(spec.total_stages);
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
