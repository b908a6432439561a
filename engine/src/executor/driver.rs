//! The compute thread's loop: poll the executor, hand sends to the transport, deliver what
//! arrives, report finished steps.

use super::core::{Action, ExecError, Executor};
use crate::transport::{Transport, TransportError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// How long one wait for a message lasts before the transport is asked again; peer loss is
/// detected by the transport (heartbeats), not by this timeout.
const POLL: Duration = Duration::from_millis(200);

/// Runs `exec` to its last step over `transport`, calling `on_step(step, loss)` after each.
pub fn drive(
    exec: &mut Executor,
    transport: &mut impl Transport,
    mut on_step: impl FnMut(u64, Option<f64>),
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
            Action::StepDone { step, loss } => on_step(step, loss),
            Action::Finished => {
                transport.finish()?;
                return Ok(());
            }
        }
    }
}
