//! The tracker's thread: takes metrics from the trainer over a channel (never blocking it),
//! sends them in batches, retries with back-off while the server is away, and at the end says
//! what did not arrive. Its decisions are the [`Outbox`]'s; this file only moves bytes and time.

use super::http::Server;
use super::mlflow::{self, Answer, Call, Metric, Status};
use super::outbox::{Outbox, Request, Setup, Step};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Values waiting for an absent server before the oldest are dropped (20,000 steps of 5).
const CAPACITY: usize = 100_000;
/// How often queued values go out while training runs.
const BATCH_EVERY: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(super) enum Msg {
    Metrics(Vec<Metric>),
    Tag(String, String),
    Artifact(String),
    /// End the run: settle everything by `deadline`, then answer on `done`.
    End {
        status: Status,
        end_ms: u64,
        deadline: Instant,
        done: Sender<()>,
    },
}

/// The link's health as the worker sees it.
struct Link {
    retry_at: Instant,
    backoff: Duration,
    /// The server has failed since it last answered.
    failing: bool,
    warned: bool,
    drops_told: usize,
}

pub(super) fn run(server: Server, setup: Setup, rx: Receiver<Msg>) {
    let mut outbox = Outbox::new(setup, CAPACITY);
    let mut link = Link {
        retry_at: Instant::now(),
        backoff: FIRST_BACKOFF,
        failing: false,
        warned: false,
        drops_told: 0,
    };
    let mut ending: Option<(Instant, Sender<()>)> = None;
    let mut last_batch = Instant::now() - BATCH_EVERY;
    loop {
        let wait = if ending.is_some() {
            Duration::from_millis(20)
        } else {
            BATCH_EVERY
        };
        match rx.recv_timeout(wait) {
            Ok(msg) => {
                take(msg, &mut outbox, &mut ending);
                while let Ok(m) = rx.try_recv() {
                    take(m, &mut outbox, &mut ending);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The trainer went away without ending the run.
            Err(RecvTimeoutError::Disconnected) if ending.is_none() => {
                let (done, _) = crossbeam_channel::bounded(1);
                outbox.tag(
                    "brigade.failure".into(),
                    "brigade stopped without ending the run".into(),
                );
                outbox.end(Status::Failed, now_ms());
                ending = Some((Instant::now() + Duration::from_secs(5), done));
            }
            // Nothing more can come: wait between retries rather than spin.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(20)),
        }
        let now = Instant::now();
        if ending.is_some() {
            // At the end, try again every second until the deadline, whatever the back-off.
            link.retry_at = link.retry_at.min(now + Duration::from_secs(1));
        }
        let due = ending.is_some()
            || now.duration_since(last_batch) >= BATCH_EVERY
            || outbox.pending_values() >= mlflow::MAX_METRICS;
        if due && now >= link.retry_at {
            last_batch = now;
            send(&server, &mut outbox, &mut link);
        }
        if let Some((deadline, done)) = &ending
            && (outbox.settled() || Instant::now() >= *deadline)
        {
            tell_end(&server, &outbox);
            let _ = done.send(());
            return;
        }
    }
}

fn take(msg: Msg, outbox: &mut Outbox, ending: &mut Option<(Instant, Sender<()>)>) {
    match msg {
        Msg::Metrics(ms) => ms.into_iter().for_each(|m| outbox.metric(m)),
        Msg::Tag(k, v) => outbox.tag(k, v),
        Msg::Artifact(p) => outbox.artifact(p),
        // The first end counts (a signal and the trainer's own end may race).
        Msg::End {
            status,
            end_ms,
            deadline,
            done,
        } => {
            if ending.is_none() {
                outbox.end(status, end_ms);
                *ending = Some((deadline, done));
            } else {
                let _ = done.send(());
            }
        }
    }
}

/// Sends what is due until the queue is empty or the server fails.
fn send(server: &Server, outbox: &mut Outbox, link: &mut Link) {
    while let Some(req) = outbox.next() {
        let answer = match call_for(outbox, &req) {
            Ok(call) => server.call(&call),
            Err(why) => Answer::Refused {
                status: 400,
                code: "BRIGADE".into(),
                message: why,
            },
        };
        match outbox.answered(&req, answer) {
            Step::Done => {
                if link.failing {
                    crate::note!(
                        "mlflow: {} answers again; sending what waited",
                        server.base()
                    );
                }
                link.failing = false;
                link.backoff = FIRST_BACKOFF;
                if matches!(req, Request::CreateRun { .. } | Request::Reopen(_)) {
                    crate::note!(
                        "mlflow: run {} at {}",
                        outbox.run.run_id,
                        run_page(server, outbox)
                    );
                }
            }
            Step::Retry(why) => {
                if !link.warned {
                    crate::note!(
                        "warning: mlflow: {why}; training goes on, and what it logs is kept and sent when the server answers"
                    );
                    link.warned = true;
                }
                link.failing = true;
                link.retry_at = Instant::now() + link.backoff;
                link.backoff = (link.backoff * 2).min(MAX_BACKOFF);
                return;
            }
            Step::Dropped(why) => {
                link.drops_told += 1;
                if link.drops_told <= 3 {
                    crate::note!("warning: mlflow: {why}");
                }
            }
            Step::GiveUp(why) => {
                crate::note!(
                    "warning: mlflow: {why}; nothing more is sent to {}",
                    server.base()
                );
                return;
            }
        }
    }
}

/// The HTTP call for `req`; an artifact that cannot be read or placed is an error.
fn call_for(outbox: &Outbox, req: &Request) -> Result<Call, String> {
    let run = &outbox.run.run_id;
    let setup = outbox.setup();
    Ok(match req {
        Request::FindExperiment(name) => mlflow::get_experiment(name),
        Request::CreateExperiment(name) => mlflow::create_experiment(name),
        Request::CreateRun { experiment_id } => mlflow::create_run(
            experiment_id,
            setup.run_name.as_deref(),
            setup.start_ms,
            &setup.tags,
        ),
        Request::GetRun(id) => mlflow::get_run(id),
        Request::Reopen(id) => mlflow::update_run(id, Status::Running, None),
        Request::Log { metrics, params } => {
            let (ms, ps) = outbox.batch(*metrics, params);
            mlflow::log_batch(run, &ms, ps)
        }
        Request::Tag(k, v) => mlflow::set_tag(run, k, v),
        Request::Upload(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: cannot read it: {e}"))?;
            let name = std::path::Path::new(path)
                .file_name()
                .map_or("artifact".into(), |n| n.to_string_lossy().into_owned());
            mlflow::upload(&outbox.run.artifact_uri, &name, bytes)?
        }
        Request::End(status, at) => mlflow::update_run(run, *status, Some(*at)),
    })
}

fn run_page(server: &Server, outbox: &Outbox) -> String {
    format!(
        "{}/#/experiments/{}/runs/{}",
        server.base(),
        outbox.run.experiment_id,
        outbox.run.run_id
    )
}

/// The last word: where the run is, or what did not reach the server.
fn tell_end(server: &Server, outbox: &Outbox) {
    let lost = outbox.undelivered();
    if lost.is_empty() {
        crate::note!("mlflow: every value reached {}", run_page(server, outbox));
        return;
    }
    let mut parts = Vec::new();
    if lost.metric_values > 0 {
        parts.push(format!("{} metric values", lost.metric_values));
    }
    if lost.params > 0 {
        parts.push(format!("{} params", lost.params));
    }
    if !lost.artifacts.is_empty() {
        let names: Vec<String> = lost
            .artifacts
            .iter()
            .map(|a| {
                std::path::Path::new(a)
                    .file_name()
                    .map_or(a.clone(), |n| n.to_string_lossy().into_owned())
            })
            .collect();
        parts.push(format!("the artifacts {}", names.join(", ")));
    }
    if lost.status {
        parts.push("the run's final status".into());
    }
    crate::note!(
        "warning: mlflow: {} did not reach {}{}",
        parts.join(", "),
        server.base(),
        lost.why
            .map(|w| format!(" (last: {w})"))
            .unwrap_or_default()
    );
}

/// Milliseconds since the Unix epoch (MLflow's timestamps).
pub(super) fn now_ms() -> u64 {
    crate::trace::now_us() / 1000
}
