//! The ranks a supervisor started, as it sees them: running, done, exited, and what each said
//! when it failed.

use super::spawn::Spawned;
use std::process::ExitStatus;

/// What a rank said when it failed (its `error` event).
#[derive(Debug, Clone)]
pub struct RankError {
    pub message: String,
    pub bad_input: bool,
    /// The peer it lost, if that was its failure: then the peer's failure is the cause.
    pub lost_peer: Option<usize>,
}

/// One started rank.
pub struct Running {
    pub stage: usize,
    pub host: String,
    pub spawned: Spawned,
    /// Its exit, once it exited.
    pub status: Option<Result<ExitStatus, String>>,
    /// It said `done`: every step finished.
    pub done: bool,
    /// The rank's own account of its failure.
    pub error: Option<RankError>,
}

impl Running {
    /// Exited after finishing every step.
    pub fn succeeded(&self) -> bool {
        self.done && matches!(&self.status, Some(Ok(s)) if s.success())
    }
}

/// The started rank `k`.
pub fn find(running: &[Running], k: usize) -> &Running {
    running
        .iter()
        .find(|r| r.stage == k)
        .expect("a started stage")
}

/// The started rank `k`, to update.
pub fn find_mut(running: &mut [Running], k: usize) -> Option<&mut Running> {
    running.iter_mut().find(|r| r.stage == k)
}
