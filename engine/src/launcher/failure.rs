//! Saying why a launch failed: a rank's own `error` event when it sent one, its signal or exit
//! code otherwise; and which rank to blame when one failure causes another.

use super::Running;
use std::time::Duration;

/// What a rank said when it failed.
#[derive(Debug, Clone)]
pub(super) struct RankError {
    pub(super) message: String,
    pub(super) bad_input: bool,
    /// The peer it lost, if that was its failure: then the peer's failure is the cause.
    pub(super) lost_peer: Option<usize>,
}

/// How long a rank that lost its peer waits, as the suspect, for the peer's own exit: the
/// peer's failure (a kill, a crash) explains the job's end better than the loss it caused.
pub(super) const BLAME_GRACE: Duration = Duration::from_secs(2);

/// A rank failed because of input the user must fix (the launcher exits with code 2 too).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub(super) fn describe_failure(r: &Running) -> String {
    use std::os::unix::process::ExitStatusExt;
    // The rank's own account; without one (killed, or it died before it could say), the last
    // line it wrote to stderr, which says how far it got.
    let last = r.error.as_ref().map(|e| e.message.clone()).or_else(|| {
        // Let the stderr reader catch up with the child's last words.
        std::thread::sleep(Duration::from_millis(100));
        let tail = r.stderr_tail.lock().expect("tail lock");
        // A panic's message is the line after "panicked at".
        match tail.iter().position(|l| l.contains("panicked at")) {
            Some(i) => Some(
                tail.iter()
                    .skip(i)
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None => tail.back().cloned(),
        }
    });
    let how = match &r.status {
        Some(Ok(s)) if s.signal().is_some() => {
            format!("was killed by signal {}", s.signal().unwrap_or(0))
        }
        Some(Ok(s)) if s.success() => "exited before finishing its steps".to_string(),
        Some(Ok(s)) => format!("exited with code {}", s.code().unwrap_or(-1)),
        Some(Err(e)) => format!("could not be waited for: {e}"),
        None => "is still running".to_string(),
    };
    let killed = matches!(&r.status, Some(Ok(s)) if s.signal().is_some());
    match last {
        // A killed rank said nothing about its end: its last line is context, not a cause.
        Some(l) if killed && r.error.is_none() => format!(
            "stage {} (host {}, pid {}) {how} (its last message: {})",
            r.stage, r.host, r.pid, l
        ),
        Some(l) => format!(
            "stage {} (host {}, pid {}) {how}: {}",
            r.stage,
            r.host,
            r.pid,
            l.trim_start_matches("error: ")
        ),
        None => format!("stage {} (host {}, pid {}) {how}", r.stage, r.host, r.pid),
    }
}
