//! The I/O thread's main task: binds and connects the sockets, starts one task per socket
//! ([`super::pull`], [`super::push`]) and routes the compute thread's commands to them.

use super::link::{Link, NetConfig, ToCompute};
use super::push::Queued;
use super::{pull, push};
use crate::message::Outgoing;
use crate::trace::TraceEvent;
use crate::transport::TransportError;
use crate::transport::reducer::Segment;
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
    /// An all-reduce segment, sent from where its values lie.
    Segment(Segment),
    Finish(crossbeam_channel::Sender<Vec<TraceEvent>>),
}

/// How long `finish` waits for the neighbours' byes before exiting anyway: by then they have
/// received all they need from this stage (they could not have finished otherwise).
const LINGER: Duration = Duration::from_secs(3);

/// A pull or push task: it returns its trace.
type Task = tokio::task::JoinHandle<Vec<TraceEvent>>;
/// Each peer rank's push task's queue (`None`: say bye).
type Routes = HashMap<usize, mpsc::UnboundedSender<Option<Queued>>>;

pub(super) async fn io_main(
    cfg: NetConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    to_compute: ToCompute,
    ready: Sender<Result<(), TransportError>>,
) {
    let k = cfg.stage;
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
    let pull = match start_pull(&cfg, &links, &to_compute).await {
        Ok(pull) => pull,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let (routes, pushes) = start_pushes(&cfg, &links, &to_compute);

    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Send(out) => route(&routes, Queued::Tensor(out), &to_compute, k),
            Cmd::Segment(seg) => route(&routes, Queued::Segment(seg), &to_compute, k),
            Cmd::Finish(ack) => {
                let _ = ack.send(finish(&routes, pushes, pull).await);
                return;
            }
        }
    }
}

/// Queues `q` on the push task of the rank it goes to (rank `k` has no link there: the
/// executor and the plan disagree, an error for the compute thread).
fn route(routes: &Routes, q: Queued, to_compute: &ToCompute, k: usize) {
    let (to, kind, edge) = q.route();
    match routes.get(&to) {
        Some(tx) => {
            let _ = tx.send(Some(q));
        }
        None => {
            let _ = to_compute.send(Err(TransportError::Io {
                stage: k,
                why: format!(
                    "no link to rank {to} for {kind:?} on edge {edge} (the executor and the plan disagree)"
                ),
            }));
        }
    }
}

/// Binds this rank's endpoint, if anyone sends to it, and starts its pull task.
async fn start_pull(
    cfg: &Arc<NetConfig>,
    links: &HashMap<usize, Link>,
    to_compute: &ToCompute,
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
        to_compute.clone(),
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
