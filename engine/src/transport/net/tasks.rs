//! The I/O thread's main task: binds and connects the sockets, starts one task per socket
//! ([`super::pull`], [`super::push`]) and routes the compute thread's commands to them.

use super::auth;
use super::socket::Listener;
use super::{Cmd, NetConfig};
use crate::executor::core::{Incoming, Outgoing, Peer};
use crate::transport::TransportError;
use brigade_stages::codec::Kind;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

pub(super) type ToCompute = Sender<Result<Incoming, TransportError>>;

/// How long `finish` waits for the neighbours' byes before exiting anyway: by then they have
/// received all they need from this stage (they could not have finished otherwise).
const LINGER: Duration = Duration::from_secs(3);

/// What the pull and push tasks of one neighbour share.
#[derive(Clone)]
pub(super) struct Link {
    /// Sent in our hello, answered by the peer on its connection to us.
    pub(super) own_challenge: [u8; 16],
    /// The peer's challenge, from its hello, which our push task answers.
    pub(super) peer_challenge: watch::Receiver<Option<Vec<u8>>>,
    pub(super) peer_challenge_tx: Arc<watch::Sender<Option<Vec<u8>>>>,
    /// The peer said bye: its silence afterwards is expected.
    pub(super) done: Arc<AtomicBool>,
}

impl Link {
    fn new() -> Self {
        let (tx, rx) = watch::channel(None);
        Link {
            own_challenge: auth::challenge(),
            peer_challenge: rx,
            peer_challenge_tx: Arc::new(tx),
            done: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub(super) async fn io_main(
    cfg: NetConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    to_compute: ToCompute,
    ready: Sender<Result<(), TransportError>>,
) {
    let k = cfg.stage;
    let cfg = Arc::new(cfg);
    let prev = Link::new();
    let next = Link::new();

    let mut pulls = Vec::new();
    for (endpoint, kind, link) in [
        (cfg.endpoints.act_in.clone(), Kind::Activation, prev.clone()),
        (cfg.endpoints.grad_in.clone(), Kind::Gradient, next.clone()),
    ] {
        let Some(endpoint) = endpoint else { continue };
        let listener = match Listener::bind(&endpoint).await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(TransportError::Bind {
                    stage: k,
                    address: endpoint,
                    why: e.to_string(),
                }));
                return;
            }
        };
        pulls.push(tokio::spawn(super::pull::pull_task(
            cfg.clone(),
            listener,
            endpoint,
            kind,
            link,
            to_compute.clone(),
        )));
    }
    let _ = ready.send(Ok(()));

    let mut pushes = Vec::new();
    let mut routes: Vec<(Peer, mpsc::UnboundedSender<Option<Outgoing>>)> = Vec::new();
    for (endpoint, to, link) in [
        (cfg.endpoints.act_out.clone(), Peer::Next, next.clone()),
        (cfg.endpoints.grad_out.clone(), Peer::Prev, prev.clone()),
    ] {
        let Some(endpoint) = endpoint else { continue };
        let (tx, rx) = mpsc::unbounded_channel();
        routes.push((to, tx));
        pushes.push(tokio::spawn(super::push::push_task(
            cfg.clone(),
            endpoint,
            to,
            rx,
            link,
            to_compute.clone(),
        )));
    }

    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Send(out) => {
                if let Some((_, tx)) = routes.iter().find(|(p, _)| *p == out.to) {
                    let _ = tx.send(Some(*out));
                }
            }
            Cmd::Finish(ack) => {
                for (_, tx) in &routes {
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
                        let _ = p.await;
                    }
                })
                .await;
                let _ = ack.send(events);
                return;
            }
        }
    }
}
