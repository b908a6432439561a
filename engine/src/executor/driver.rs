//! The compute thread's loop: poll the executor, hand sends to the transport, deliver what
//! arrives, and pass finished steps and checkpoints to the caller.

use super::core::{Action, EvalFigures, ExecError, Executor};
use crate::allreduce::{Ring, RingError, RingStep};
use crate::message::{Incoming, Outgoing};
use crate::transport::{Transport, TransportError};
use brigade_stages::Act;
use brigade_stages::checkpoint::Snapshot;
use brigade_stages::codec::Kind;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Checkpoint(String),
    #[error(transparent)]
    AllReduce(#[from] RingError),
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
    // Ring segments that arrived before their all-reduce began (a peer ahead by a chunk).
    let mut early = HashMap::new();
    loop {
        match exec.poll()? {
            Action::Send(msg) => transport.send(*msg)?,
            Action::Wait { .. } => {
                if let Some(msg) = transport.recv(POLL)? {
                    accept(exec, &mut early, msg)?;
                    // Take what else has arrived before computing again.
                    while let Some(more) = transport.recv(Duration::ZERO)? {
                        accept(exec, &mut early, more)?;
                    }
                }
            }
            Action::Checkpoint { step, snapshots } => on(Progress::Checkpoint { step, snapshots })?,
            Action::AllReduce {
                chunk,
                ring,
                me,
                data,
            } => {
                let sum = all_reduce(exec, transport, &mut early, chunk, &ring, me, data)?;
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

/// Ring segments received early, by (chunk, step, ring step).
type Early = HashMap<(u32, u64, u64), Act>;

/// A received message: a ring segment waits for its all-reduce (a replica further on may start
/// one while this rank still computes); anything else goes to the executor.
fn accept(exec: &mut Executor, early: &mut Early, msg: Incoming) -> Result<(), DriveError> {
    if msg.kind == Kind::Reduce {
        early.insert((msg.edge, msg.step, msg.microbatch), msg.tensor);
        Ok(())
    } else {
        Ok(exec.deliver(msg)?)
    }
}

/// Sums `data` with the other members of `ring` (this rank is member `me`): sends and receives
/// the ring's segments over `transport`, delivering any other message to `exec` meanwhile.
fn all_reduce(
    exec: &mut Executor,
    transport: &mut impl Transport,
    early: &mut Early,
    chunk: usize,
    ring: &[usize],
    me: usize,
    mut data: Vec<f32>,
) -> Result<Vec<f32>, DriveError> {
    let (n, d) = (data.len(), ring.len());
    // Whole segments of at least one value each.
    data.resize(n.max(1).div_ceil(d) * d, 0.0);
    let (mut machine, mut next) = Ring::start(d, me, data);
    let (to, step) = (ring[(me + 1) % d], exec.step());
    let device = exec.stages()[0].device().clone().inner();
    loop {
        match next {
            RingStep::Done(mut sum) => {
                sum.truncate(n);
                return Ok(sum);
            }
            RingStep::Send { step: s, data } => {
                let len = data.len();
                transport.send(Outgoing {
                    edge: chunk as u32,
                    to,
                    kind: Kind::Reduce,
                    step,
                    microbatch: s as u64,
                    tensor: Act::from_f32(data, &[1, len], &device),
                })?;
            }
        }
        let want = (chunk as u32, step, machine.waiting_for() as u64);
        let segment = loop {
            if let Some(a) = early.remove(&want) {
                break a;
            }
            if let Some(msg) = transport.recv(POLL)? {
                accept(exec, early, msg)?;
            }
        };
        let values: Vec<f32> = segment.to_data().convert::<f32>().iter::<f32>().collect();
        next = machine.receive(want.2 as u32, &values)?;
    }
}
