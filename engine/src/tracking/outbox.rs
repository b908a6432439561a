//! What brigade still owes the tracking server, and what to send next: a pure state machine.
//! The worker ([`super::worker`]) asks [`Outbox::next`] for a request, makes it, and hands the
//! [`Answer`] to [`Outbox::answered`]; time, sockets and back-off live there, not here.

use super::mlflow::{Answer, MAX_METRICS, MAX_PARAMS, Metric, Status};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// How the run is set up, from the topology and the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub experiment: String,
    pub run_name: Option<String>,
    /// Continue this MLflow run instead of creating one (`MLFLOW_RUN_ID`).
    pub resume_run: Option<String>,
    /// Tags set when the run is created.
    pub tags: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    pub start_ms: u64,
}

/// The next call to make, and what its answer settles.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    FindExperiment(String),
    CreateExperiment(String),
    CreateRun {
        experiment_id: String,
    },
    GetRun(String),
    /// A continued run is set back to RUNNING.
    Reopen(String),
    /// The first `metrics` pending values and the params from `params_from` (at most
    /// [`MAX_PARAMS`]).
    Log {
        metrics: usize,
        params: std::ops::Range<usize>,
    },
    Tag(String, String),
    /// The first pending artifact.
    Upload(String),
    End(Status, u64),
}

/// What an answer meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Done; ask for the next request.
    Done,
    /// The server did not answer properly: make the same request again later.
    Retry(String),
    /// The server refused this request for good; what it carried is lost (counted).
    Dropped(String),
    /// The server refused the run itself (no experiment, no permission): nothing more is sent.
    GiveUp(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    FindExperiment,
    CreateExperiment,
    CreateRun(String),
    GetRun,
    Reopen,
    Ready,
    Gone(String),
}

/// The run as the server knows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunIds {
    pub experiment_id: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// What never reached the server, for the final message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Undelivered {
    pub metric_values: u64,
    pub params: usize,
    pub artifacts: Vec<String>,
    pub status: bool,
    /// Why, the last reason heard.
    pub why: Option<String>,
}

impl Undelivered {
    pub fn is_empty(&self) -> bool {
        self.metric_values == 0 && self.params == 0 && self.artifacts.is_empty() && !self.status
    }
}

/// Everything owed to the server.
#[derive(Debug)]
pub struct Outbox {
    setup: Setup,
    phase: Phase,
    pub run: RunIds,
    /// Params sent so far (they go in order, [`MAX_PARAMS`] at a time).
    params_sent: usize,
    metrics: VecDeque<Metric>,
    capacity: usize,
    /// The last step queued per metric key: a rerun after a restart repeats steps already sent.
    last_step: HashMap<String, u64>,
    lost_values: u64,
    lost_params: usize,
    tags: VecDeque<(String, String)>,
    artifacts: VecDeque<String>,
    lost_artifacts: Vec<String>,
    end: Option<(Status, u64)>,
    ended: bool,
    /// The server refused the final status.
    status_lost: bool,
    why: Option<String>,
}

impl Outbox {
    /// An outbox holding at most `capacity` metric values (the oldest are dropped beyond it).
    pub fn new(setup: Setup, capacity: usize) -> Outbox {
        let phase = if setup.resume_run.is_some() {
            Phase::GetRun
        } else {
            Phase::FindExperiment
        };
        Outbox {
            setup,
            phase,
            run: RunIds::default(),
            params_sent: 0,
            metrics: VecDeque::new(),
            capacity: capacity.max(1),
            last_step: HashMap::new(),
            lost_values: 0,
            lost_params: 0,
            tags: VecDeque::new(),
            artifacts: VecDeque::new(),
            lost_artifacts: Vec::new(),
            end: None,
            ended: false,
            status_lost: false,
            why: None,
        }
    }

    /// Queues a metric value; a step at or before one already queued for its key is skipped.
    pub fn metric(&mut self, m: Metric) {
        let last = self.last_step.entry(m.key.clone()).or_insert(0);
        if m.step <= *last && m.step != 0 {
            return;
        }
        *last = m.step;
        if self.metrics.len() == self.capacity {
            self.metrics.pop_front();
            self.lost_values += 1;
            self.why = Some(format!(
                "more than {} values waited for the server",
                self.capacity
            ));
        }
        self.metrics.push_back(m);
    }

    pub fn tag(&mut self, key: String, value: String) {
        self.tags.push_back((key, value));
    }

    /// Queues an artifact (the worker reads its bytes when it sends it).
    pub fn artifact(&mut self, path: String) {
        self.artifacts.push_back(path);
    }

    /// The run ends with `status` at `end_ms`, once everything before it is sent.
    pub fn end(&mut self, status: Status, end_ms: u64) {
        self.end = Some((status, end_ms));
    }

    /// Everything queued has been settled (sent, or given up), the end included if asked.
    pub fn settled(&self) -> bool {
        matches!(self.phase, Phase::Gone(_)) || (self.next().is_none() && self.end.is_some())
    }

    /// Values waiting to be sent.
    pub fn pending_values(&self) -> usize {
        self.metrics.len()
    }

    /// The request to make now, if any.
    pub fn next(&self) -> Option<Request> {
        let s = &self.setup;
        let run = || self.run.run_id.clone();
        match &self.phase {
            Phase::Gone(_) => None,
            Phase::FindExperiment => Some(Request::FindExperiment(s.experiment.clone())),
            Phase::CreateExperiment => Some(Request::CreateExperiment(s.experiment.clone())),
            Phase::CreateRun(id) => Some(Request::CreateRun {
                experiment_id: id.clone(),
            }),
            Phase::GetRun => Some(Request::GetRun(s.resume_run.clone().unwrap_or_default())),
            Phase::Reopen => Some(Request::Reopen(run())),
            Phase::Ready => self.next_ready(),
        }
    }

    fn next_ready(&self) -> Option<Request> {
        // Params go alone, before any metric: a refused param (a value changed) makes the
        // server refuse its whole batch.
        let params = self.params_sent..(self.params_sent + MAX_PARAMS).min(self.setup.params.len());
        if !params.is_empty() {
            return Some(Request::Log { metrics: 0, params });
        }
        if !self.metrics.is_empty() {
            return Some(Request::Log {
                metrics: self.metrics.len().min(MAX_METRICS),
                params: params.end..params.end,
            });
        }
        if let Some((k, v)) = self.tags.front() {
            return Some(Request::Tag(k.clone(), v.clone()));
        }
        if let Some(a) = self.artifacts.front() {
            return Some(Request::Upload(a.clone()));
        }
        match self.end {
            Some((status, at)) if !self.ended => Some(Request::End(status, at)),
            _ => None,
        }
    }

    /// The metrics and params a [`Request::Log`] carries.
    pub fn batch(
        &self,
        metrics: usize,
        params: &std::ops::Range<usize>,
    ) -> (Vec<Metric>, &[(String, String)]) {
        (
            self.metrics.iter().take(metrics).cloned().collect(),
            &self.setup.params[params.clone()],
        )
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// What is still owed or was lost, and the last reason.
    pub fn undelivered(&self) -> Undelivered {
        let pending = self.metrics.len() as u64;
        Undelivered {
            metric_values: self.lost_values + pending,
            params: self.lost_params + (self.setup.params.len() - self.params_sent),
            artifacts: self
                .lost_artifacts
                .iter()
                .chain(&self.artifacts)
                .cloned()
                .collect(),
            status: (self.end.is_some() && !self.ended) || self.status_lost,
            why: match &self.phase {
                Phase::Gone(why) => Some(why.clone()),
                _ => self.why.clone(),
            },
        }
    }

    /// Takes the server's answer to `req` (the request [`Outbox::next`] gave).
    pub fn answered(&mut self, req: &Request, answer: Answer) -> Step {
        match answer {
            Answer::Ok(v) => self.accepted(req, &v),
            Answer::Failed(why) => {
                self.why = Some(why.clone());
                Step::Retry(why)
            }
            Answer::Refused {
                status,
                code,
                message,
            } => self.refused(req, status, &code, &message),
        }
    }

    fn accepted(&mut self, req: &Request, v: &Value) -> Step {
        let id = |v: &Value| v.as_str().map(str::to_string);
        match req {
            Request::FindExperiment(name) => {
                let e = &v["experiment"];
                let Some(eid) = id(&e["experiment_id"]) else {
                    return self.malformed("experiments/get-by-name");
                };
                if e["lifecycle_stage"] == "deleted" {
                    return self.give_up(format!(
                        "experiment \"{name}\" is deleted on the server: restore it (`mlflow experiments restore`) or name another in [tracking] experiment"
                    ));
                }
                self.phase = Phase::CreateRun(eid);
            }
            Request::CreateExperiment(_) => match id(&v["experiment_id"]) {
                Some(eid) => self.phase = Phase::CreateRun(eid),
                None => return self.malformed("experiments/create"),
            },
            Request::CreateRun { .. } | Request::GetRun(_) => {
                let info = &v["run"]["info"];
                let (Some(run), Some(eid)) = (id(&info["run_id"]), id(&info["experiment_id"]))
                else {
                    return self.malformed("runs/create");
                };
                self.run = RunIds {
                    experiment_id: eid,
                    run_id: run,
                    artifact_uri: id(&info["artifact_uri"]).unwrap_or_default(),
                };
                self.phase = match req {
                    Request::GetRun(_) => Phase::Reopen,
                    _ => Phase::Ready,
                };
            }
            Request::Reopen(_) => self.phase = Phase::Ready,
            _ => self.settle(req),
        }
        Step::Done
    }

    /// Removes what a request carried from the queues.
    fn settle(&mut self, req: &Request) {
        match req {
            Request::Log { metrics, params } => {
                self.metrics.drain(..*metrics);
                self.params_sent = params.end;
            }
            Request::Tag(..) => {
                self.tags.pop_front();
            }
            Request::Upload(_) => {
                self.artifacts.pop_front();
            }
            Request::End(..) => self.ended = true,
            _ => {}
        }
    }

    fn refused(&mut self, req: &Request, status: u16, code: &str, message: &str) -> Step {
        let why = format!("refused ({status} {code}): {message}");
        match req {
            Request::FindExperiment(_) if status == 404 || code == "RESOURCE_DOES_NOT_EXIST" => {
                self.phase = Phase::CreateExperiment;
                return Step::Done;
            }
            // Another client created it first.
            Request::CreateExperiment(_) if code == "RESOURCE_ALREADY_EXISTS" => {
                self.phase = Phase::FindExperiment;
                return Step::Done;
            }
            _ if status == 401 || status == 403 || !matches!(self.phase, Phase::Ready) => {
                return self.give_up(format!(
                    "{why} (check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD and the experiment)"
                ));
            }
            Request::Log { metrics, params } => {
                self.lost_values += (*metrics).min(self.metrics.len()) as u64;
                self.lost_params += params.len();
            }
            Request::Upload(a) => self.lost_artifacts.push(a.clone()),
            Request::End(..) => self.status_lost = true,
            _ => {}
        }
        self.settle(req);
        self.why = Some(why.clone());
        Step::Dropped(why)
    }

    fn give_up(&mut self, why: String) -> Step {
        self.phase = Phase::Gone(why.clone());
        Step::GiveUp(why)
    }

    /// A 2xx answer without the fields MLflow always sends: not an MLflow server (yet).
    fn malformed(&mut self, call: &str) -> Step {
        let why = format!("{call} answered without the fields MLflow sends");
        self.why = Some(why.clone());
        Step::Retry(why)
    }
}
