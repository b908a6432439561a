//! The HTTP driver: makes a [`Call`] on the tracking server with ureq (blocking, on the
//! tracker's own thread) and reads the answer with [`mlflow::answer`]. Credentials come from
//! MLflow's standard variables, never from the command line, and never appear in messages.

use super::mlflow::{self, Answer, Call};
use std::time::Duration;

/// A tracking server and how to authenticate to it.
pub struct Server {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Server {
    /// The server at `uri` (checked by `Tracking::check_uri`), with credentials from
    /// MLFLOW_TRACKING_TOKEN (bearer) or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD
    /// (basic).
    pub fn new(uri: &str) -> Server {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        Server {
            base: uri.trim_end_matches('/').to_string(),
            agent: config.into(),
            auth: auth_header(|k| std::env::var(k).ok()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Makes `call`; never fails (a failure is an [`Answer::Failed`]).
    pub fn call(&self, call: &Call) -> Answer {
        let url = format!("{}{}", self.base, call.path);
        let result = match call.method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            method => {
                let mut r = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                r = r.header("Content-Type", call.content_type);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.send(&call.body[..])
            }
        };
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                match resp.body_mut().read_to_vec() {
                    Ok(body) => mlflow::answer(status, &body),
                    Err(e) => Answer::Failed(format!("answered {status}, then: {e}")),
                }
            }
            Err(e) => Answer::Failed(format!("no answer from {}: {e}", self.base)),
        }
    }
}

/// The Authorization header MLflow's clients send, from its variables.
pub fn auth_header(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    use base64::Engine;
    if let Some(t) = var("MLFLOW_TRACKING_TOKEN").filter(|t| !t.is_empty()) {
        return Some(format!("Bearer {t}"));
    }
    match (
        var("MLFLOW_TRACKING_USERNAME"),
        var("MLFLOW_TRACKING_PASSWORD"),
    ) {
        (Some(u), Some(p)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )),
        _ => None,
    }
}
