//! The network transport: ZeroMQ links (ZMTP 3.1 from brigade's own code, in the wire crate
//! [`brigade_wire`], decisions 0007 and 0015) over TCP or Unix sockets. A rank binds one PULL socket for everything sent to it and
//! connects one PUSH to each rank it sends to (from the job plan's edges). A tokio runtime on
//! its own I/O thread owns the sockets; the compute thread talks to it through channels, so
//! sends and receives overlap compute and a tensor's read-back and encoding happen off the
//! compute thread. Ring segments arrive as host values and are summed on the compute thread
//! whenever it asks for what arrived ([`super::inline`]).
//!
//! Each connection opens with the ZMTP handshake (NULL, or CURVE under a job secret) whose
//! READY metadata names run, job and rank, carries PING heartbeats while idle, and closes with
//! a bye. A peer that stays silent longer than
//! the peer timeout, or whose connection breaks before its bye, is a fatal error naming it.
//! In-flight messages are bounded by the schedule (at most M activations or gradients per
//! link per step), and every frame by the plan's largest tensor before it is allocated.

mod accept;
mod link;
mod pull;
mod push;
mod tasks;

use super::inline::InlineReducer;
use super::reducer::Segment;
use super::{Transport, TransportError};
use crate::message::{Arrived, Outgoing, ReduceJob};
use crate::trace::TraceEvent;
use crossbeam_channel::RecvTimeoutError;
use link::FromIo;
use std::time::Duration;
use tasks::Cmd;
use tokio::sync::mpsc;

pub use brigade_wire::secret::{JobKeys, MIN_SECRET, load_secret, z85};
pub use link::NetConfig;

/// The compute thread's handle on the I/O thread.
pub struct NetTransport {
    stage: usize,
    to_io: mpsc::UnboundedSender<Cmd>,
    from_io: crossbeam_channel::Receiver<Result<FromIo, TransportError>>,
    reducer: InlineReducer,
    thread: Option<std::thread::JoinHandle<()>>,
    trace: Vec<TraceEvent>,
}

impl NetTransport {
    /// Binds this stage's sockets (errors are returned here) and starts connecting to the
    /// neighbours in the background.
    pub fn start(cfg: NetConfig) -> Result<NetTransport, TransportError> {
        let stage = cfg.stage;
        let (to_io, cmds) = mpsc::unbounded_channel();
        let (to_compute, from_io) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let reducer = InlineReducer::new(stage, cfg.trace);
        let thread = std::thread::Builder::new()
            .name(format!("stage{stage}-io"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(TransportError::Io {
                            stage,
                            why: format!("cannot start the I/O runtime: {e}"),
                        }));
                        return;
                    }
                };
                rt.block_on(tasks::io_main(cfg, cmds, to_compute, ready_tx));
            })
            .map_err(|e| TransportError::Io {
                stage,
                why: format!("cannot start the I/O thread: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetTransport {
                stage,
                to_io,
                from_io,
                reducer,
                thread: Some(thread),
                trace: Vec::new(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Io {
                stage,
                why: "the I/O thread ended during start-up".into(),
            }),
        }
    }

    /// Send spans recorded by the I/O thread (after [`Transport::finish`]).
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.trace)
    }

    fn io_gone(&self) -> TransportError {
        io_gone(self.stage, &self.from_io)
    }
}

impl Transport for NetTransport {
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError> {
        self.to_io
            .send(Cmd::Send(Box::new(msg)))
            .map_err(|_| self.io_gone())
    }

    fn reduce(&mut self, job: ReduceJob) -> Result<(), TransportError> {
        let send = segment_to(&self.to_io, self.stage);
        self.reducer.start(job, send)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Arrived>, TransportError> {
        let (stage, from_io) = (self.stage, &self.from_io);
        let next = |wait: Duration| match from_io.recv_timeout(wait) {
            Ok(got) => got.map(Some),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(io_gone(stage, from_io)),
        };
        let send = segment_to(&self.to_io, stage);
        self.reducer.recv(timeout, next, send)
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.to_io
            .send(Cmd::Finish(tx))
            .map_err(|_| self.io_gone())?;
        self.trace = rx.recv().map_err(|_| self.io_gone())?;
        self.trace.extend(self.reducer.take_trace());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

/// Why the I/O thread is gone: a fatal error it reported explains its end better than
/// the closed channel.
fn io_gone(
    stage: usize,
    from_io: &crossbeam_channel::Receiver<Result<FromIo, TransportError>>,
) -> TransportError {
    match from_io.try_recv() {
        Ok(Err(e)) => e,
        _ => TransportError::Io {
            stage,
            why: "the I/O thread has ended".into(),
        },
    }
}

/// How the reducer's segments leave rank `stage`: queued on the I/O thread, which writes
/// their values where they lie.
fn segment_to(
    to_io: &mpsc::UnboundedSender<Cmd>,
    stage: usize,
) -> impl FnMut(Segment) -> Result<(), TransportError> {
    move |seg: Segment| {
        to_io
            .send(Cmd::Segment(seg))
            .map_err(|_| TransportError::Io {
                stage,
                why: "the I/O thread has ended".into(),
            })
    }
}

// Control frames (the wire crate's) and tensor headers (the codec's) carry one magic and one
// protocol version: bumping one without the other must not build.
const _: () = assert!(
    brigade_wire::control::MAGIC == brigade_stages::codec::MAGIC
        && brigade_wire::control::VERSION == brigade_stages::codec::VERSION
);
