//! Chrome Trace Event output (`--trace trace.json`, opens in Perfetto or chrome://tracing):
//! one `pid` per stage, complete events (`"ph": "X"`) named forward, backward, send, recv and
//! optimizer with `{"step", "mb"}` args; `data` is the first chunk's wait for its inputs (inside
//! its forward); with `[eval]`, `evaluate` (compute thread) and `send_eval` (I/O thread), whose
//! `step` is the steps done before the evaluation; with replicas, `allreduce` (one per gradient bucket: `mb` the bucket, `edge` the chunk, `peer` the next member, `bytes`, `algo` ring or direct). Timestamps are microseconds of the host's
//! wall clock, so the stages of one host share a time axis. After the run, one counter event
//! (`"ph": "C"`, `"name": "peak_rss"`, `args.MiB`) per rank holds its peak resident memory.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// One complete event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceEvent {
    pub name: String,
    pub ph: String,
    /// Start, µs since the Unix epoch.
    pub ts: u64,
    /// Duration, µs.
    pub dur: u64,
    pub pid: u64,
    /// 0: compute thread, 1: I/O thread.
    pub tid: u64,
    pub args: TraceArgs,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceArgs {
    pub step: u64,
    pub mb: u64,
    /// Sends and receives: the plan's edge, and the rank at the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<usize>,
    /// A bucket's all-reduce: the bytes this rank contributed, and the algorithm
    /// (`ring` or `direct`); `mb` is the bucket's index, `edge` its chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algo: Option<String>,
}

/// A span before it is attributed to a stage and thread.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub name: &'static str,
    pub start: u64,
    pub end: u64,
    pub step: u64,
    pub mb: u64,
    /// (edge, rank at the other end) of a send or receive.
    pub link: Option<(u32, usize)>,
    /// (bytes, algorithm) of a bucket's all-reduce.
    pub reduce: Option<(u64, &'static str)>,
}

impl Span {
    pub fn new(name: &'static str, start: u64, end: u64, step: u64, mb: u64) -> Self {
        Span {
            name,
            start,
            end,
            step,
            mb,
            link: None,
            reduce: None,
        }
    }

    /// A bucket's all-reduce of `bytes` by `algo`.
    pub fn reduced(mut self, bytes: u64, algo: &'static str) -> Self {
        self.reduce = Some((bytes, algo));
        self
    }

    /// The span of a message on `edge` to or from rank `peer`.
    pub fn on(mut self, edge: u32, peer: usize) -> Self {
        self.link = Some((edge, peer));
        self
    }
}

/// Collects spans of one thread; does nothing (beyond reading the clock) when disabled.
#[derive(Debug, Clone)]
pub struct Tracer {
    pid: u64,
    tid: u64,
    enabled: bool,
    events: Vec<TraceEvent>,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Tracer {
    pub fn new(stage: usize, tid: u64, enabled: bool) -> Self {
        Tracer {
            pid: stage as u64,
            tid,
            enabled,
            events: Vec::new(),
        }
    }

    pub fn now(&self) -> u64 {
        now_us()
    }

    pub fn record(&mut self, s: Span) {
        if self.enabled {
            self.events.push(TraceEvent {
                name: s.name.to_string(),
                ph: "X".into(),
                ts: s.start,
                dur: s.end.saturating_sub(s.start),
                pid: self.pid,
                tid: self.tid,
                args: TraceArgs {
                    step: s.step,
                    mb: s.mb,
                    edge: s.link.map(|l| l.0),
                    peer: s.link.map(|l| l.1),
                    bytes: s.reduce.map(|r| r.0),
                    algo: s.reduce.map(|r| r.1.to_string()),
                },
            });
        }
    }

    pub fn into_events(self) -> Vec<TraceEvent> {
        self.events
    }
}

/// Names each stage's process and thread in the viewer.
pub fn metadata(stages: usize) -> Vec<serde_json::Value> {
    (0..stages)
        .flat_map(|k| {
            [
                serde_json::json!({"name": "process_name", "ph": "M", "pid": k, "tid": 0, "args": {"name": format!("stage {k}")}}),
                serde_json::json!({"name": "thread_name", "ph": "M", "pid": k, "tid": 0, "args": {"name": "compute"}}),
                serde_json::json!({"name": "thread_name", "ph": "M", "pid": k, "tid": 1, "args": {"name": "io"}}),
            ]
        })
        .collect()
}
