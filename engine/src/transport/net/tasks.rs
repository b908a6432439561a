//! The I/O thread's main task: binds and connects the sockets, starts one task per socket
//! ([`super::pull`], [`super::push`]) and routes the compute thread's commands to them.

use super::socket::Listener;
use super::{Cmd, NetConfig};
use crate::message::{Incoming, Outgoing};
use crate::transport::TransportError;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

pub(super) type ToCompute = Sender<Result<Incoming, TransportError>>;

/// How long `finish` waits for the neighbours' byes before exiting anyway: by then they have
/// received all they need from this stage (they could not have finished otherwise).
const LINGER: Duration = Duration::from_secs(3);

/// What the pull task and the push task to one peer rank share.
#[derive(Clone, Default)]
pub(super) struct Link {
    /// The peer said bye: its silence afterwards is expected.
    pub(super) done: Arc<AtomicBool>,
}

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

    let mut pulls = Vec::new();
    if let Some(listen) = cfg.links.listen.clone() {
        let listener = match Listener::bind(&listen.endpoint).await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(TransportError::Bind {
                    stage: k,
                    address: listen.endpoint.clone(),
                    why: e.to_string(),
                }));
                return;
            }
        };
        pulls.push(tokio::spawn(super::pull::pull_task(
            cfg.clone(),
            listener,
            listen,
            links.clone(),
            to_compute.clone(),
        )));
    }
    let _ = ready.send(Ok(()));

    let mut pushes = Vec::new();
    let mut routes: HashMap<usize, mpsc::UnboundedSender<Option<Outgoing>>> = HashMap::new();
    for out in cfg.links.out.clone() {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(out.peer, tx);
        let shared = links[&out.peer].clone();
        pushes.push(tokio::spawn(super::push::push_task(
            cfg.clone(),
            out,
            rx,
            shared,
            to_compute.clone(),
        )));
    }

    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Send(out) => match routes.get(&out.to) {
                Some(tx) => {
                    let _ = tx.send(Some(*out));
                }
                None => {
                    let _ = to_compute.send(Err(TransportError::Io {
                        stage: k,
                        why: format!(
                            "no link to rank {} for {:?} on edge {} (the executor and the plan disagree)",
                            out.to, out.kind, out.edge
                        ),
                    }));
                }
            },
            Cmd::Finish(ack) => {
                for tx in routes.values() {
                    let _ = tx.send(None);
                }
                let mut events = Vec::new();
                for p in pushes.drain(..) {
                    if let Ok(ev) = p.await {
                        events.extend(ev);
                    }
                }
                let _ = timeout(LINGER, async {
                    for p in pulls.drain(..) {
                        if let Ok(ev) = p.await {
                            events.extend(ev);
                        }
                    }
                })
                .await;
                let _ = ack.send(events);
                return;
            }
        }
    }
}
