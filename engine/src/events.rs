//! The stage → launcher protocol: one JSON object per line on a stage's stdout, tagged by
//! `event`. Launchers (`train`, `launch`, and cluster glue such as the Spark package) read
//! these instead of parsing human messages; stderr is for people.
//!
//! ```text
//! {"event":"started","stage":0,"host":"local","pid":4242,"layers":[0,3],"chunks":[0],"run_id":"…","job_hash":"…","endpoint":"ipc://…/rank0.ipc"}
//! {"event":"step","stage":1,"step":1,"loss":2.31,"step_ms":41.2}
//! {"event":"eval","stage":1,"step":50,"val_loss":0.12,"val_accuracy":0.97,"rows":359}
//! {"event":"checkpoint","stage":0,"step":10,"dir":"ck/step-00000010"}
//! {"event":"error","stage":1,"message":"stage 1: lost peer stage 0 …","bad_input":false,"lost_peer":0}
//! {"event":"done","stage":0,"peak_rss_kib":70312}
//! ```
//!
//! `stage` is the rank. Fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StageEvent {
    /// The rank has bound its sockets and starts training.
    Started {
        stage: usize,
        host: String,
        pid: u32,
        /// `[start, end)` of the layers this rank holds.
        layers: [usize; 2],
        #[serde(default)]
        chunks: Vec<usize>,
        run_id: String,
        #[serde(default)]
        job_hash: String,
        /// Where the rank listens (its one ZeroMQ PULL), if any rank sends to it.
        #[serde(default)]
        endpoint: Option<String>,
        /// The compute threads it runs its kernels on.
        #[serde(default = "one_thread")]
        threads: usize,
    },
    /// A step finished (`step` is 1-based); the loss only on the rank with the last chunk.
    Step {
        stage: usize,
        step: u64,
        loss: Option<f64>,
        step_ms: f64,
        /// The global gradient norm before clipping, on a rank that computed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grad_norm: Option<f64>,
    },
    /// An evaluation after `step` steps finished (on the rank with the last chunk): the mean
    /// validation loss and, for classifiers, the share of correct predictions.
    Eval {
        stage: usize,
        step: u64,
        val_loss: f64,
        val_accuracy: Option<f64>,
        rows: u64,
    },
    /// A checkpoint of this rank's chunks was written (after `step` steps).
    Checkpoint {
        stage: usize,
        step: u64,
        dir: String,
    },
    /// The rank failed; `message` is its own account. `bad_input`: the user must fix a file
    /// or argument (the rank exits with code 2).
    Error {
        stage: usize,
        message: String,
        #[serde(default)]
        bad_input: bool,
        /// The rank it lost contact with, when that is how it failed (the peer's own failure
        /// is then the cause).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost_peer: Option<usize>,
    },
    /// Every step is done.
    Done {
        stage: usize,
        peak_rss_kib: Option<u64>,
    },
}

impl StageEvent {
    /// Writes the event as one line on stdout.
    pub fn emit(&self) {
        use std::io::Write;
        let line = serde_json::to_string(self).expect("an event always serialises");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Reads one line; `None` for anything that is not an event (a stray print).
    pub fn parse(line: &str) -> Option<StageEvent> {
        serde_json::from_str(line).ok()
    }

    /// The rank that sent it.
    pub fn stage(&self) -> usize {
        match self {
            StageEvent::Started { stage, .. }
            | StageEvent::Step { stage, .. }
            | StageEvent::Eval { stage, .. }
            | StageEvent::Checkpoint { stage, .. }
            | StageEvent::Error { stage, .. }
            | StageEvent::Done { stage, .. } => *stage,
        }
    }
}

fn one_thread() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_the_documented_tags() {
        let cases = [
            (
                StageEvent::Step {
                    stage: 1,
                    step: 3,
                    loss: Some(0.5),
                    step_ms: 12.0,
                    grad_norm: None,
                },
                r#"{"event":"step","stage":1,"step":3,"loss":0.5,"step_ms":12.0}"#,
            ),
            (
                StageEvent::Step {
                    stage: 0,
                    step: 4,
                    loss: Some(0.5),
                    step_ms: 12.0,
                    grad_norm: Some(2.0),
                },
                r#"{"event":"step","stage":0,"step":4,"loss":0.5,"step_ms":12.0,"grad_norm":2.0}"#,
            ),
            (
                StageEvent::Error {
                    stage: 0,
                    message: "boom".into(),
                    bad_input: true,
                    lost_peer: None,
                },
                r#"{"event":"error","stage":0,"message":"boom","bad_input":true}"#,
            ),
            (
                StageEvent::Done {
                    stage: 2,
                    peak_rss_kib: None,
                },
                r#"{"event":"done","stage":2,"peak_rss_kib":null}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(StageEvent::parse(json), Some(event));
        }
        assert_eq!(StageEvent::parse("resumed from ck/step-3"), None);
        assert_eq!(StageEvent::parse(r#"{"event":"unknown"}"#), None);
    }
}
