//! The sending side of one rank-to-rank link (every edge and kind this rank sends to that peer): connects to the neighbour's endpoint, encodes and
//! sends, tags messages once authenticated, and keeps an idle link alive with heartbeats.

use super::NetConfig;
use super::control::{Control, ControlKind};
use super::meta;
use super::socket::{self, Conn};
use super::tasks::{Link, ToCompute};
use super::zmtp::command::Command;
use super::zmtp::curve::Session;
use super::zmtp::io::Inbound;
use super::zmtp::{self, SocketType};
use crate::endpoints::OutPeer;
use crate::message::Outgoing;
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use brigade_stages::codec::{self, Route};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Sends messages to one peer, boxed under CURVE.
struct LinkSender {
    conn: WriteHalf<Conn>,
    session: Option<Session>,
    limit: Duration,
}

impl LinkSender {
    async fn send(&mut self, frames: &[&[u8]]) -> Result<(), String> {
        // A large tensor on a slow link is not a lost peer: allow 8 MB/s on top of the timeout.
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        let limit = self.limit + Duration::from_secs_f64(bytes as f64 / 8e6);
        let write = zmtp::io::send(&mut self.conn, frames, self.session.as_mut());
        within(limit, write).await
    }

    async fn command(&mut self, c: &Command) -> Result<(), String> {
        let write = zmtp::io::send_command(&mut self.conn, c, self.session.as_mut());
        within(self.limit, write).await
    }
}

/// A write that must finish within `limit`: a peer that stops reading is lost.
async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), String> {
    {
        match timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {e}")),
            Err(_) => Err(format!(
                "send did not complete within {} s",
                limit.as_secs()
            )),
        }
    }
}

/// Reads what a PULL peer sends back on our connection — PING (answered through `pongs`),
/// PONG, ERROR — until the connection ends.
async fn drain(
    mut rd: ReadHalf<Conn>,
    mut session: Option<Session>,
    pongs: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Ok(Inbound::Command(c)) =
        zmtp::io::receive(&mut rd, zmtp::io::COMMAND_LIMIT, 1, session.as_mut()).await
    {
        if let Command::Ping { context, .. } = c
            && pongs.send(context).is_err()
        {
            return;
        }
    }
}

pub(super) async fn push_task(
    cfg: Arc<NetConfig>,
    outbound: OutPeer,
    mut rx: mpsc::UnboundedReceiver<Option<Outgoing>>,
    link: Link,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let k = cfg.stage;
    let OutPeer { peer, endpoint } = outbound;
    let mut tracer = Tracer::new(k, 1, cfg.trace);
    let control = |kind| Control::new(kind, cfg.run_id, cfg.job_hash, k).encode();
    let lost = |why: String| TransportError::PeerLost {
        stage: k,
        peer,
        address: endpoint.clone(),
        why,
    };
    let report = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };

    let unreachable = |why: String| TransportError::Unreachable {
        stage: k,
        peer,
        address: endpoint.clone(),
        secs: cfg.connect_timeout.as_secs(),
        why,
    };
    let mut conn = match socket::connect(&endpoint, cfg.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            report(unreachable(e.to_string()));
            return tracer.into_events();
        }
    };
    let ours = meta::ours(cfg.run_id, cfg.job_hash, k);
    let mechanism = super::mechanism(&cfg, &endpoint, SocketType::Push);
    let handshake = zmtp::io::shake(&mut conn, SocketType::Push, &ours, &mechanism);
    let (session, pings) = match timeout(cfg.connect_timeout, handshake).await {
        Ok(Ok(h)) => (h.session, h.minor >= 1),
        Ok(Err(e)) => {
            report(unreachable(format!("ZMTP handshake failed: {e}")));
            return tracer.into_events();
        }
        Err(_) => {
            report(unreachable("the ZMTP handshake did not complete".into()));
            return tracer.into_events();
        }
    };
    let (seal, open) = match session.map(Session::split) {
        Some((seal, open)) => (Some(seal), Some(open)),
        None => (None, None),
    };
    let (rd, wr) = tokio::io::split(conn);
    let (pong_tx, mut pongs) = mpsc::unbounded_channel();
    let drainer = AbortOnDrop(tokio::spawn(drain(rd, open, pong_tx)));
    let mut out = LinkSender {
        conn: wr,
        session: seal,
        limit: cfg.peer_timeout,
    };
    let mut beat = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Some(msg)) => {
                    let start = tracer.now();
                    let route = Route { run_id: cfg.run_id, step: msg.step, microbatch: msg.microbatch, kind: msg.kind, edge: msg.edge };
                    let frames = match codec::encode_in_place(route, &msg.tensor) {
                        Ok(Some(frames)) => Ok(frames),
                        // Device memory: an asynchronous read-back, traced on its own.
                        Ok(None) => {
                            let data = codec::read_back(&msg.tensor).await;
                            tracer.record(Span::new("readback", start, tracer.now(), msg.step, msg.microbatch));
                            data.and_then(|d| codec::encode_read_back(route, d))
                        }
                        Err(e) => Err(e),
                    };
                    let (header, payload) = match frames {
                        Ok(frames) => frames,
                        Err(e) => {
                            report(TransportError::Io { stage: k, why: e.to_string() });
                            return tracer.into_events();
                        }
                    };
                    let start = tracer.now();
                    // The payload is written from the tensor's own bytes: no copy between burn and the wire.
                    if let Err(why) = out.send(&[&header, &payload]).await {
                        report(lost(why));
                        return tracer.into_events();
                    }
                    // Validation activations are traced apart from training's.
                    let name = match msg.kind {
                        brigade_stages::codec::Kind::Eval => "send_eval",
                        _ => "send",
                    };
                    tracer.record(Span::new(name, start, tracer.now(), msg.step, msg.microbatch).on(msg.edge, msg.to));
                }
                Some(None) | None => {
                    // Best effort: a neighbour that already left needs no goodbye.
                    let _ = out.send(&[&control(ControlKind::Bye)]).await;
                    drop(drainer);
                    return tracer.into_events();
                }
            },
            Some(context) = pongs.recv() => {
                if let Err(why) = out.command(&Command::Pong { context }).await {
                    report(lost(why));
                    return tracer.into_events();
                }
            }
            _ = beat.tick() => {
                // A ZMTP 3.0 peer (not brigade) has no PING; its liveness is its own business.
                if !pings || link.done.load(Ordering::SeqCst) {
                    continue;
                }
                // A ZMTP PING keeps the link alive without a message a ZeroMQ tap would see.
                let ping = Command::Ping { ttl: ttl_deciseconds(cfg.peer_timeout), context: Vec::new() };
                if let Err(why) = out.command(&ping).await {
                    // It may have said bye while we were sending.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if !link.done.load(Ordering::SeqCst) {
                        report(lost(why));
                        return tracer.into_events();
                    }
                }
            }
        }
    }
}

/// The TTL a PING announces: the peer timeout, in tenths of a second.
fn ttl_deciseconds(d: Duration) -> u16 {
    (d.as_millis() / 100).min(u16::MAX as u128) as u16
}

/// Stops the drain task when the push task ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
