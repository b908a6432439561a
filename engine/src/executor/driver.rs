//! The compute thread's loop: poll the executor, hand sends to the transport, deliver what
//! arrives, and pass finished steps and checkpoints to the caller.

use super::core::{Action, EvalFigures, ExecError, Executor};
use super::reductions::{Owner, Reductions};
use crate::allreduce::Algo;
use crate::message::ReduceJob;
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
    /// `grad_norm`: the global gradient norm, where `clip_grad_norm` computed it.
    Step {
        step: u64,
        loss: Option<f64>,
        grad_norm: Option<f64>,
    },
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
    let mut reductions = Reductions::default();
    loop {
        match exec.poll()? {
            Action::Send(msg) => transport.send(*msg)?,
            Action::Wait { .. } | Action::AwaitReduced => {
                reductions.pump(transport, exec, POLL)?;
            }
            Action::Checkpoint { step, snapshots } => on(Progress::Checkpoint { step, snapshots })?,
            Action::ReduceBucket {
                edge,
                bucket,
                ring,
                me,
                algo,
                data,
            } => {
                let job = ReduceJob {
                    edge,
                    bucket,
                    step: exec.step(),
                    ring,
                    me,
                    algo,
                    data,
                };
                reductions.start(transport, exec, job, Owner::Bucket)?;
                // Take what has arrived before the next bucket is made.
                reductions.pump(transport, exec, Duration::ZERO)?;
            }
            Action::AllReduce {
                chunk,
                ring,
                me,
                data,
            } => {
                let key = (chunk as u32, 0);
                let job = ReduceJob {
                    edge: key.0,
                    bucket: key.1,
                    step: exec.step(),
                    ring,
                    me,
                    algo: Algo::Ring,
                    data,
                };
                reductions.start(transport, exec, job, Owner::Blocking)?;
                let sum = loop {
                    if let Some(sum) = reductions.take_done(key) {
                        break sum;
                    }
                    reductions.pump(transport, exec, POLL)?;
                };
                exec.reduced(sum)?;
            }
            Action::StepDone {
                step,
                loss,
                grad_norm,
            } => on(Progress::Step {
                step,
                loss,
                grad_norm,
            })?,
            Action::EvalDone { step, figures } => on(Progress::Eval { step, figures })?,
            Action::Finished => {
                transport.finish()?;
                return Ok(());
            }
        }
    }
}
