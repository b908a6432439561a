//! The I/O thread's main task: binds and connects the sockets, starts one task per socket
//! ([`super::pull`], [`super::push`]) and routes the compute thread's commands to them.

use super::socket::Listener;
use super::{Cmd, NetConfig};
use crate::message::{Incoming, Outgoing};
use crate::transport::TransportError;
use brigade_stages::codec::Kind;
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

/// What the pull and push tasks of one edge share (on the consumer: the activations pulled and
/// the gradients pushed; on the producer: the other way round).
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
    let mut links: HashMap<u32, Link> = HashMap::new();
    let mut link = |edge: u32| links.entry(edge).or_default().clone();

    let mut pulls = Vec::new();
    for inbound in cfg.links.inbound.clone() {
        let listener = match Listener::bind(&inbound.endpoint).await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(TransportError::Bind {
                    stage: k,
                    address: inbound.endpoint.clone(),
                    why: e.to_string(),
                }));
                return;
            }
        };
        let shared = link(inbound.edge);
        pulls.push(tokio::spawn(super::pull::pull_task(
            cfg.clone(),
            listener,
            inbound,
            shared,
            to_compute.clone(),
        )));
    }
    let _ = ready.send(Ok(()));

    let mut pushes = Vec::new();
    let mut routes: HashMap<(u32, Kind), mpsc::UnboundedSender<Option<Outgoing>>> = HashMap::new();
    for outbound in cfg.links.outbound.clone() {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert((outbound.edge, outbound.kind), tx);
        let shared = link(outbound.edge);
        pushes.push(tokio::spawn(super::push::push_task(
            cfg.clone(),
            outbound,
            rx,
            shared,
            to_compute.clone(),
        )));
    }

    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Send(out) => match routes.get(&(out.edge, out.kind)) {
                Some(tx) => {
                    let _ = tx.send(Some(*out));
                }
                None => {
                    let _ = to_compute.send(Err(TransportError::Io {
                        stage: k,
                        why: format!(
                            "no link sends {:?} on edge {} (the executor and the plan disagree)",
                            out.kind, out.edge
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
