//! The compute thread's loop: poll the executor, hand sends to the transport, deliver what
//! arrives, and pass finished steps and checkpoints to the caller.

use super::core::{Action, EvalFigures, ExecError, Executor};
use crate::transport::{Transport, TransportError};
use brigade_stages::checkpoint::Snapshot;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Checkpoint(String),
}

/// What the driver reports to its caller.
#[derive(Debug)]
pub enum Progress {
    /// Step `step` (0-based) finished; the batch's mean loss on the rank with the last chunk.
    Step { step: u64, loss: Option<f64> },
    /// Checkpoints to write, taken after `step` steps.
    Checkpoint { step: u64, snapshots: Vec<Snapshot> },
    /// An evaluation after `step` steps finished (figures on the rank with the last chunk).
    Eval {
        step: u64,
        figures: Option<EvalFigures>,
    },
}

/// How long one wait for a message lasts before the transport is asked again; peer loss is
/// detected by the transport (heartbeats), not by this timeout.
const POLL: Duration = Duration::from_millis(200);

/// Runs `exec` to its last step over `transport`, calling `on` with its progress.
pub fn drive(
    exec: &mut Executor,
    transport: &mut impl Transport,
    mut on: impl FnMut(Progress) -> Result<(), DriveError>,
) -> Result<(), DriveError> {
    loop {
        match exec.poll()? {
            Action::Send(msg) => transport.send(*msg)?,
            Action::Wait { .. } => {
                if let Some(msg) = transport.recv(POLL)? {
                    exec.deliver(msg)?;
                    // Take what else has arrived before computing again.
                    while let Some(more) = transport.recv(Duration::ZERO)? {
                        exec.deliver(more)?;
                    }
                }
            }
            Action::Checkpoint { step, snapshots } => on(Progress::Checkpoint { step, snapshots })?,
            Action::StepDone { step, loss } => on(Progress::Step { step, loss })?,
            Action::EvalDone { step, figures } => on(Progress::Eval { step, figures })?,
            Action::Finished => {
                transport.finish()?;
                return Ok(());
            }
        }
    }
}
