//! The sending side of one rank-to-rank link (every edge and kind this rank sends to that
//! peer): connects to the neighbour's endpoint, encodes and sends, tags messages once
//! authenticated, and keeps an idle link alive with heartbeats.

use super::link::{AbortOnDrop, Link, NetConfig, ToCompute, mechanism};
use crate::endpoints::OutPeer;
use crate::message::Outgoing;
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use crate::transport::reducer::Segment;
use brigade_stages::codec::{self, Kind, Route};
use brigade_wire::control::{Control, ControlKind};
use brigade_wire::meta;
use brigade_wire::socket::{self, Conn};
use brigade_wire::zmtp::command::Command;
use brigade_wire::zmtp::curve::Session;
use brigade_wire::zmtp::io::Inbound;
use brigade_wire::zmtp::{self, SocketType};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// What a push task sends: a tensor, or an all-reduce segment (its values shared with the
/// ring that keeps them, written to the socket where they lie).
pub(super) enum Queued {
    Tensor(Box<Outgoing>),
    Segment(Segment),
}

impl Queued {
    /// The rank it goes to, its kind and edge.
    pub(super) fn route(&self) -> (usize, Kind, u32) {
        match self {
            Queued::Tensor(m) => (m.to, m.kind, m.edge),
            Queued::Segment(s) => (s.peer, Kind::Reduce, s.edge),
        }
    }
}

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

/// Sends to one peer until the compute thread is done (then says bye) or the link fails;
/// returns the trace of its sends and read-backs.
pub(super) async fn push_task(
    cfg: Arc<NetConfig>,
    outbound: OutPeer,
    rx: mpsc::UnboundedReceiver<Option<Queued>>,
    link: Link,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let mut tracer = Tracer::new(cfg.stage, 1, cfg.trace);
    let OutPeer { peer, endpoint } = outbound;
    let push = Push {
        cfg,
        peer,
        endpoint,
        link,
        to_compute,
    };
    let sent = match push.connect().await {
        Ok(conn) => push.run(conn, rx, &mut tracer).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        let _ = push.to_compute.send(Err(e));
    }
    tracer.into_events()
}

/// One link's sending side: whom it sends to and what it shares with the pull from that peer.
struct Push {
    cfg: Arc<NetConfig>,
    peer: usize,
    endpoint: String,
    link: Link,
    to_compute: ToCompute,
}

/// A connection to the peer that has passed the ZMTP handshake.
struct Connected {
    out: LinkSender,
    /// The contexts of the peer's PINGs, to answer with PONG.
    pongs: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Reads what the peer sends back; stopped when the push task ends.
    drainer: AbortOnDrop,
    /// The peer speaks ZMTP 3.1, which has PING.
    pings: bool,
}

impl Push {
    fn lost(&self, why: String) -> TransportError {
        TransportError::PeerLost {
            stage: self.cfg.stage,
            peer: self.peer,
            address: self.endpoint.clone(),
            why,
        }
    }

    fn unreachable(&self, why: String) -> TransportError {
        TransportError::Unreachable {
            stage: self.cfg.stage,
            peer: self.peer,
            address: self.endpoint.clone(),
            secs: self.cfg.connect_timeout.as_secs(),
            why,
        }
    }

    /// Connects (retrying until the connect timeout) and completes the ZMTP handshake.
    async fn connect(&self) -> Result<Connected, TransportError> {
        let cfg = &self.cfg;
        let mut conn = socket::connect(&self.endpoint, cfg.connect_timeout)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let ours = meta::ours(cfg.run_id, cfg.job_hash, cfg.stage);
        let mechanism = mechanism(cfg, &self.endpoint, SocketType::Push);
        let handshake = zmtp::io::shake(&mut conn, SocketType::Push, &ours, &mechanism);
        let (session, pings) = match timeout(cfg.connect_timeout, handshake).await {
            Ok(Ok(h)) => (h.session, h.minor >= 1),
            Ok(Err(e)) => return Err(self.unreachable(format!("ZMTP handshake failed: {e}"))),
            Err(_) => return Err(self.unreachable("the ZMTP handshake did not complete".into())),
        };
        let (seal, open) = match session.map(Session::split) {
            Some((seal, open)) => (Some(seal), Some(open)),
            None => (None, None),
        };
        let (rd, wr) = tokio::io::split(conn);
        let (pong_tx, pongs) = mpsc::unbounded_channel();
        Ok(Connected {
            out: LinkSender {
                conn: wr,
                session: seal,
                limit: cfg.peer_timeout,
            },
            pongs,
            drainer: AbortOnDrop(tokio::spawn(drain(rd, open, pong_tx))),
            pings,
        })
    }

    /// Sends the compute thread's messages, answers PINGs and sends heartbeats, until the
    /// compute thread is done (then says bye) or the link fails.
    async fn run(
        &self,
        conn: Connected,
        mut rx: mpsc::UnboundedReceiver<Option<Queued>>,
        tracer: &mut Tracer,
    ) -> Result<(), TransportError> {
        let Connected {
            mut out,
            mut pongs,
            drainer,
            pings,
        } = conn;
        let mut beat = tokio::time::interval(self.cfg.heartbeat);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Some(Queued::Tensor(msg))) => self.send(&mut out, *msg, tracer).await?,
                    Some(Some(Queued::Segment(seg))) => self.send_segment(&mut out, seg, tracer).await?,
                    Some(None) | None => {
                        // Best effort: a neighbour that already left needs no goodbye.
                        let (cfg, k) = (&self.cfg, self.cfg.stage);
                        let bye = Control::new(ControlKind::Bye, cfg.run_id, cfg.job_hash, k);
                        let _ = out.send(&[&bye.encode()]).await;
                        drop(drainer);
                        return Ok(());
                    }
                },
                Some(context) = pongs.recv() => {
                    let pong = Command::Pong { context };
                    out.command(&pong).await.map_err(|why| self.lost(why))?;
                }
                // A ZMTP 3.0 peer (not brigade) has no PING; its liveness is its own business.
                _ = beat.tick(), if pings => self.heartbeat(&mut out).await?,
            }
        }
    }

    /// Encodes one message (reading a device tensor back first) and sends it.
    async fn send(
        &self,
        out: &mut LinkSender,
        msg: Outgoing,
        tracer: &mut Tracer,
    ) -> Result<(), TransportError> {
        let start = tracer.now();
        let route = Route {
            run_id: self.cfg.run_id,
            step: msg.step,
            microbatch: msg.microbatch,
            kind: msg.kind,
            edge: msg.edge,
        };
        let frames = match codec::encode_in_place(route, &msg.tensor) {
            Ok(Some(frames)) => Ok(frames),
            // Device memory: an asynchronous read-back, traced on its own.
            Ok(None) => {
                let data = codec::read_back(&msg.tensor).await;
                let readback = Span::new("readback", start, tracer.now(), msg.step, msg.microbatch);
                tracer.record(readback);
                data.and_then(|d| codec::encode_read_back(route, d))
            }
            Err(e) => Err(e),
        };
        let (header, payload) = frames.map_err(|e| TransportError::Io {
            stage: self.cfg.stage,
            why: e.to_string(),
        })?;
        let start = tracer.now();
        // The payload is written from the tensor's own bytes: no copy between burn and the wire.
        (out.send(&[&header, &payload]).await).map_err(|why| self.lost(why))?;
        // Validation activations are traced apart from training's.
        let name = match msg.kind {
            brigade_stages::codec::Kind::Eval => "send_eval",
            _ => "send",
        };
        let span = Span::new(name, start, tracer.now(), msg.step, msg.microbatch);
        tracer.record(span.on(msg.edge, msg.to));
        Ok(())
    }

    /// Sends an all-reduce segment from the values the ring shares with it: no tensor, no
    /// copy between the ring's buffer and the socket.
    async fn send_segment(
        &self,
        out: &mut LinkSender,
        seg: Segment,
        tracer: &mut Tracer,
    ) -> Result<(), TransportError> {
        let route = Route {
            run_id: self.cfg.run_id,
            step: seg.step,
            microbatch: seg.tag,
            kind: Kind::Reduce,
            edge: seg.edge,
        };
        let payload: &[u8] = bytemuck::cast_slice(&seg.values);
        let header =
            codec::f32_header(route, &[1, seg.values.len()], payload.len()).map_err(|e| {
                TransportError::Io {
                    stage: self.cfg.stage,
                    why: e.to_string(),
                }
            })?;
        let start = tracer.now();
        (out.send(&[&header, payload]).await).map_err(|why| self.lost(why))?;
        let span = Span::new("send", start, tracer.now(), seg.step, seg.tag);
        tracer.record(span.on(seg.edge, seg.peer));
        Ok(())
    }

    /// A ZMTP PING keeps the link alive without a message a ZeroMQ tap would see; a peer that
    /// said bye needs none.
    async fn heartbeat(&self, out: &mut LinkSender) -> Result<(), TransportError> {
        if self.link.done.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ttl = ttl_deciseconds(self.cfg.peer_timeout);
        let ping = Command::Ping {
            ttl,
            context: Vec::new(),
        };
        if let Err(why) = out.command(&ping).await {
            // It may have said bye while we were sending.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.link.done.load(Ordering::SeqCst) {
                return Err(self.lost(why));
            }
        }
        Ok(())
    }
}

/// The TTL a PING announces: the peer timeout, in tenths of a second.
fn ttl_deciseconds(d: Duration) -> u16 {
    (d.as_millis() / 100).min(u16::MAX as u128) as u16
}
