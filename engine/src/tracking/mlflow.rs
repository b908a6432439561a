//! MLflow's REST API (version 2.0) as data: each call brigade makes is a [`Call`] built by a
//! pure function, and each answer is read into an [`Answer`] by another, so both are tested with
//! tables and the HTTP driver ([`super::http`]) only moves bytes.

use serde_json::{Value, json};

/// One HTTP request to the tracking server, relative to its address.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: &'static str,
    /// Path and query, starting with `/`.
    pub path: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// What the server answered, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 2xx with a JSON body (`{}` for calls that return nothing).
    Ok(Value),
    /// 4xx: the server understood and refused; sending it again will not help.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer, a 5xx, or a body that is not MLflow's JSON: try again later.
    Failed(String),
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub step: u64,
}

/// Run statuses brigade sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Finished,
    Failed,
    Killed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Killed => "KILLED",
        }
    }
}

/// The most metrics, params and tags one `log-batch` may carry (MLflow's limits).
pub const MAX_METRICS: usize = 1000;
pub const MAX_PARAMS: usize = 100;
/// The longest param value every MLflow 2.x server takes; longer ones are cut.
pub const MAX_PARAM_CHARS: usize = 6000;

const API: &str = "/api/2.0/mlflow";

fn post(path: &str, body: Value) -> Call {
    Call {
        method: "POST",
        path: format!("{API}/{path}"),
        body: body.to_string().into_bytes(),
        content_type: "application/json",
    }
}

pub fn get_experiment(name: &str) -> Call {
    Call {
        method: "GET",
        path: format!(
            "{API}/experiments/get-by-name?experiment_name={}",
            percent_encode(name)
        ),
        body: Vec::new(),
        content_type: "application/json",
    }
}

pub fn create_experiment(name: &str) -> Call {
    post("experiments/create", json!({ "name": name }))
}

pub fn create_run(
    experiment_id: &str,
    run_name: Option<&str>,
    start_ms: u64,
    tags: &[(String, String)],
) -> Call {
    let mut body = json!({
        "experiment_id": experiment_id,
        "start_time": start_ms,
        "tags": key_values(tags),
    });
    if let Some(n) = run_name {
        body["run_name"] = json!(n);
    }
    post("runs/create", body)
}

pub fn get_run(run_id: &str) -> Call {
    Call {
        method: "GET",
        path: format!("{API}/runs/get?run_id={}", percent_encode(run_id)),
        body: Vec::new(),
        content_type: "application/json",
    }
}

/// Metrics and params of one run. MLflow's JSON has no NaN: non-finite values go as the
/// strings "NaN", "Infinity", "-Infinity", which the server reads as such (a `null` would
/// make it refuse the whole batch).
pub fn log_batch(run_id: &str, metrics: &[Metric], params: &[(String, String)]) -> Call {
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|m| {
            let value = match m.value {
                v if v.is_finite() => json!(v),
                v if v.is_nan() => json!("NaN"),
                v if v > 0.0 => json!("Infinity"),
                _ => json!("-Infinity"),
            };
            json!({"key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step})
        })
        .collect();
    post(
        "runs/log-batch",
        json!({ "run_id": run_id, "metrics": metrics, "params": key_values(params), "tags": [] }),
    )
}

pub fn update_run(run_id: &str, status: Status, end_ms: Option<u64>) -> Call {
    let mut body = json!({ "run_id": run_id, "status": status.as_str() });
    if let Some(t) = end_ms {
        body["end_time"] = json!(t);
    }
    post("runs/update", body)
}

pub fn set_tag(run_id: &str, key: &str, value: &str) -> Call {
    post(
        "runs/set-tag",
        json!({ "run_id": run_id, "key": key, "value": value }),
    )
}

/// Uploads `name` into the run's artifacts through the server's artifact proxy (`mlflow server`
/// serves artifacts by default: the run's `artifact_uri` is `mlflow-artifacts:/…`).
pub fn upload(artifact_uri: &str, name: &str, bytes: Vec<u8>) -> Result<Call, String> {
    let rest = artifact_uri
        .strip_prefix("mlflow-artifacts:")
        .ok_or_else(|| {
            format!(
                "the run's artifacts go to {artifact_uri}, which brigade cannot write through the server; start the server with artifact serving (the default of `mlflow server`, or --serve-artifacts)"
            )
        })?;
    // `mlflow-artifacts:/1/abc/artifacts` or `mlflow-artifacts://host:port/1/abc/artifacts`.
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest.trim_start_matches('/'),
    };
    Ok(Call {
        method: "PUT",
        path: format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
            path.trim_end_matches('/')
                .split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/"),
            percent_encode(name)
        ),
        body: bytes,
        content_type: "application/octet-stream",
    })
}

fn key_values(kv: &[(String, String)]) -> Vec<Value> {
    kv.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

/// Reads an HTTP answer: `status` 0 means no answer at all (`body` says why).
pub fn answer(status: u16, body: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(body);
    let json: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Some(json!({}))
    } else {
        serde_json::from_slice(body).ok()
    };
    match (status, json) {
        (0, _) => Answer::Failed(text.into_owned()),
        (200..=299, Some(v)) if v.is_object() => Answer::Ok(v),
        (200..=299, _) => Answer::Failed(format!(
            "answered {status} with a body that is not MLflow's JSON: {}",
            snippet(&text)
        )),
        (400..=499, v) => {
            let field = |k: &str| {
                v.as_ref()
                    .and_then(|v| v[k].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let message = field("message");
            Answer::Refused {
                status,
                code: field("error_code"),
                message: if message.is_empty() {
                    snippet(&text)
                } else {
                    message
                },
            }
        }
        _ => Answer::Failed(format!("answered {status}: {}", snippet(&text))),
    }
}

/// The first line of a body, at most 200 characters (for messages).
fn snippet(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A param value MLflow takes: cut to [`MAX_PARAM_CHARS`].
pub fn param_value(v: &str) -> String {
    match v.char_indices().nth(MAX_PARAM_CHARS - 1) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_string(),
    }
}
