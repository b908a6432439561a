//! The I/O thread's main task: binds and connects the sockets, starts one task per socket
//! ([`super::pull`], [`super::push`]) and routes the compute thread's commands to them. It
//! runs the rank's all-reduces too: jobs from the compute thread, segments from the pull task,
//! the next segments straight to the push tasks, the sums back to the compute thread.

use super::link::{Link, NetConfig, ToCompute};
use super::{pull, push};
use crate::message::{Arrived, Outgoing, ReduceJob};
use crate::trace::TraceEvent;
use crate::transport::reducer::{Out, Reducer, Segment, SegmentError};
use crate::transport::{TransportError, bad_segment};
use brigade_stages::Act;
use brigade_stages::codec::Kind;
use brigade_wire::socket::Listener;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// What the compute thread asks of the I/O thread.
pub(super) enum Cmd {
    Send(Box<Outgoing>),
    Reduce(Box<ReduceJob>),
    Finish(crossbeam_channel::Sender<Vec<TraceEvent>>),
}

/// How long `finish` waits for the neighbours' byes before exiting anyway: by then they have
/// received all they need from this stage (they could not have finished otherwise).
const LINGER: Duration = Duration::from_secs(3);

/// A pull or push task: it returns its trace.
type Task = tokio::task::JoinHandle<Vec<TraceEvent>>;
/// Each peer rank's push task's queue (`None`: say bye).
type Routes = HashMap<usize, mpsc::UnboundedSender<Option<Outgoing>>>;

pub(super) async fn io_main(
    cfg: NetConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    to_compute: ToCompute,
    ready: Sender<Result<(), TransportError>>,
) {
    let cfg = Arc::new(cfg);
    // One Link per peer rank: its bye, seen by our pull, quiets our push's heartbeats to it.
    let mut peer_ranks: Vec<usize> = cfg.links.out.iter().map(|o| o.peer).collect();
    if let Some(l) = &cfg.links.listen {
        peer_ranks.extend(l.peers());
    }
    let links: HashMap<usize, Link> = peer_ranks
        .into_iter()
        .map(|p| (p, Link::default()))
        .collect();
    let (seg_tx, mut segments) = mpsc::unbounded_channel();
    let pull = match start_pull(&cfg, &links, (to_compute.clone(), seg_tx)).await {
        Ok(pull) => pull,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let (routes, pushes) = start_pushes(&cfg, &links, &to_compute);
    let mut io = Io {
        stage: cfg.stage,
        routes,
        to_compute,
        reducer: Reducer::default(),
    };
    loop {
        let cmd = tokio::select! {
            // A segment first: it moves a reduction the peers wait on.
            biased;
            Some(seg) = segments.recv() => {
                let outs = io.reducer.arrived(seg);
                io.carry(outs);
                continue;
            }
            cmd = cmds.recv() => cmd,
        };
        match cmd {
            Some(Cmd::Send(out)) => io.route(*out),
            Some(Cmd::Reduce(job)) => {
                let outs = io.reducer.start(*job);
                io.carry(outs);
            }
            Some(Cmd::Finish(ack)) => {
                let _ = ack.send(finish(&io.routes, pushes, pull).await);
                return;
            }
            None => return,
        }
    }
}

/// The I/O thread's routing: the push tasks, the way back, and the reductions in flight.
struct Io {
    stage: usize,
    routes: Routes,
    to_compute: ToCompute,
    reducer: Reducer,
}

impl Io {
    /// Queues `out` on its peer's push task.
    fn route(&self, out: Outgoing) {
        match self.routes.get(&out.to) {
            Some(tx) => {
                let _ = tx.send(Some(out));
            }
            None => {
                let _ = self.to_compute.send(Err(TransportError::Io {
                    stage: self.stage,
                    why: format!(
                        "no link to rank {} for {:?} on edge {} (the executor and the plan disagree)",
                        out.to, out.kind, out.edge
                    ),
                }));
            }
        }
    }

    /// Sends the segments the reducer asks for and hands its sums (or a peer's bad segment,
    /// a fatal error) to the compute thread.
    fn carry(&self, outs: Result<Vec<Out>, SegmentError>) {
        let outs = match outs {
            Ok(outs) => outs,
            Err(e) => {
                let _ = self.to_compute.send(Err(bad_segment(self.stage, e)));
                return;
            }
        };
        for out in outs {
            match out {
                Out::Send(seg) => self.route(outgoing(seg)),
                Out::Done(r) => {
                    let _ = self.to_compute.send(Ok(Arrived::Reduced(r)));
                }
            }
        }
    }
}

/// A segment to send as a host tensor (sent from its own bytes: no copy on the way out).
fn outgoing(seg: Segment) -> Outgoing {
    let len = seg.values.len();
    Outgoing {
        edge: seg.edge,
        to: seg.peer,
        kind: Kind::Reduce,
        step: seg.step,
        microbatch: seg.tag,
        tensor: Act::from_f32(seg.values, &[1, len], &burn::prelude::Device::flex()),
    }
}

/// Binds this rank's endpoint, if anyone sends to it, and starts its pull task.
async fn start_pull(
    cfg: &Arc<NetConfig>,
    links: &HashMap<usize, Link>,
    out: (ToCompute, mpsc::UnboundedSender<Segment>),
) -> Result<Option<Task>, TransportError> {
    let Some(listen) = cfg.links.listen.clone() else {
        return Ok(None);
    };
    let listener = Listener::bind(&listen.endpoint)
        .await
        .map_err(|e| TransportError::Bind {
            stage: cfg.stage,
            address: listen.endpoint.clone(),
            why: e.to_string(),
        })?;
    Ok(Some(tokio::spawn(pull::pull_task(
        cfg.clone(),
        listener,
        listen,
        links.clone(),
        out,
    ))))
}

/// Starts one push task per rank this rank sends to.
fn start_pushes(
    cfg: &Arc<NetConfig>,
    links: &HashMap<usize, Link>,
    to_compute: &ToCompute,
) -> (Routes, Vec<Task>) {
    let mut pushes = Vec::new();
    let mut routes = Routes::new();
    for out in cfg.links.out.clone() {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(out.peer, tx);
        let shared = links[&out.peer].clone();
        pushes.push(tokio::spawn(push::push_task(
            cfg.clone(),
            out,
            rx,
            shared,
            to_compute.clone(),
        )));
    }
    (routes, pushes)
}

/// Tells every push task to say bye and waits for them, then gives the pull task [`LINGER`]
/// to hear the neighbours' byes; returns their traces.
async fn finish(routes: &Routes, pushes: Vec<Task>, pull: Option<Task>) -> Vec<TraceEvent> {
    for tx in routes.values() {
        let _ = tx.send(None);
    }
    let mut events = Vec::new();
    for p in pushes {
        if let Ok(ev) = p.await {
            events.extend(ev);
        }
    }
    let _ = timeout(LINGER, async {
        if let Some(p) = pull
            && let Ok(ev) = p.await
        {
            events.extend(ev);
        }
    })
    .await;
    events
}
