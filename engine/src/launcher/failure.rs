//! Saying why a launch failed: a rank's own `error` event when it sent one, its signal or exit
//! code otherwise; and which rank to blame when one failure causes another.

use super::ranks::Running;
use std::time::{Duration, Instant};

/// How long a rank that lost its peer waits, as the suspect, for the peer's own exit: the
/// peer's failure (a kill, a crash) explains the job's end better than the loss it caused.
const BLAME_GRACE: Duration = Duration::from_secs(2);

/// A rank failed because of input the user must fix (the launcher exits with code 2 too).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn describe_failure(r: &Running) -> String {
    use std::os::unix::process::ExitStatusExt;
    // The rank's own account; without one (killed, or it died before it could say), the last
    // line it wrote to stderr, which says how far it got.
    let last = r.error.as_ref().map(|e| e.message.clone()).or_else(|| {
        // Let the stderr reader catch up with the child's last words.
        std::thread::sleep(Duration::from_millis(100));
        let tail = r.spawned.stderr_tail.lock().expect("tail lock");
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
            r.stage, r.host, r.spawned.pid, l
        ),
        Some(l) => format!(
            "stage {} (host {}, pid {}) {how}: {}",
            r.stage,
            r.host,
            r.spawned.pid,
            l.trim_start_matches("error: ")
        ),
        None => format!(
            "stage {} (host {}, pid {}) {how}",
            r.stage, r.host, r.spawned.pid
        ),
    }
}

/// Which rank's failure ends the launch. A rank that failed because it lost a peer still
/// running is only a suspect for a while: the peer's own failure, if it comes, is the cause.
#[derive(Default)]
pub struct Blame {
    /// The first rank that lost a running peer, and until when its peer may take the blame.
    suspect: Option<(usize, Instant)>,
}

impl Blame {
    /// The rank to blame for `k`'s failed exit now, if any (else `k` became the suspect).
    /// Lost peers are followed through ranks that already failed for losing their own peer
    /// (0 ← 1 ← 2 in a chain that broke at 0): the cause is where that chain starts, and while
    /// that rank runs it may still fail and take the blame.
    pub fn exited(&mut self, running: &[Running], k: usize) -> Option<usize> {
        let mut at = k;
        let mut seen = vec![k];
        while let Some(p) = super::ranks::find(running, at)
            .error
            .as_ref()
            .and_then(|e| e.lost_peer)
            .filter(|p| !seen.contains(p))
        {
            match running.iter().find(|x| x.stage == p) {
                Some(peer) if peer.status.is_none() => {
                    // The first rank that lost a peer stays the suspect.
                    self.suspect
                        .get_or_insert((k, Instant::now() + BLAME_GRACE));
                    return None;
                }
                Some(peer) if !peer.succeeded() => {
                    seen.push(p);
                    at = p;
                }
                // The peer finished cleanly, or runs on another host.
                _ => break,
            }
        }
        Some(at)
    }

    /// The suspect whose peer did not fail in time.
    pub fn due(&mut self) -> Option<usize> {
        match self.suspect {
            Some((k, until)) if Instant::now() >= until => {
                self.suspect = None;
                Some(k)
            }
            _ => None,
        }
    }

    /// Once every rank has exited: a suspect whose peer then finished cleanly, or else any rank
    /// that did not finish every step.
    pub fn at_end(&self, running: &[Running]) -> Option<usize> {
        self.suspect
            .map(|(k, _)| k)
            .or_else(|| running.iter().find(|r| !r.succeeded()).map(|r| r.stage))
    }
}
