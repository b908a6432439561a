//! The receiving side of one link (one edge, one direction): accepts connections on this
//! rank's endpoint, reads each with [`super::wire`], asks the link's [`LinkPolicy`] what to do
//! with every message and read error, and hands the peer's tensors to the compute thread.
//! Which connection is the peer, and what is refused, is decided by the policy alone.

use super::NetConfig;
use super::meta;
use super::policy::{LinkIdentity, LinkPolicy, Verdict};
use super::socket::{Conn, Listener};
use super::tasks::{Link, ToCompute};
use super::wire::Frame;
use super::zmtp::command::Command;
use super::zmtp::curve::Session;
use super::zmtp::io::Inbound;
use super::zmtp::{self, Mechanism, Metadata, SocketType, ZmtpError};

/// A brigade message: a header and a payload, or one control frame.
const MAX_FRAMES: usize = 2;
use crate::endpoints::Listen;
use crate::message::Incoming;
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use brigade_stages::codec;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

/// Room for a header, a tag or a control message beside the plan's largest payload.
const SMALL_FRAME: u64 = 64 * 1024;

struct Event {
    conn: u64,
    addr: Arc<str>,
    what: Result<Arrival, ZmtpError>,
}

/// What one connection's reader reports.
enum Arrival {
    /// The ZMTP handshake finished; the peer's READY metadata.
    Ready(Metadata),
    Message(Vec<Frame>),
    /// A heartbeat (answered with PONG by the reader).
    Ping,
}

/// Accepts connections and starts a reader for each, until the pull task ends.
/// What every connection's reader on one link needs.
struct ReaderConfig {
    /// The largest data frame.
    limit: u64,
    /// How long a connection may take to finish the ZMTP handshake.
    greeting_within: std::time::Duration,
    /// This rank's READY metadata.
    ours: Metadata,
    /// NULL, or CURVE with the job's keys (`tcp://` under a job secret).
    mechanism: Mechanism,
    /// Handshakes in progress at once: strangers cannot use up the rank's descriptors.
    pending: Arc<tokio::sync::Semaphore>,
    /// Each open connection's reader, so that a refused stranger's can be stopped.
    readers: Readers,
}

/// Open connections' readers, by connection.
type Readers = Arc<std::sync::Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

/// Handshakes in progress at once, per listener.
const PENDING_HANDSHAKES: usize = 16;
/// The longest a handshake may take once the connection is open.
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_loop(
    who: String,
    listener: Listener,
    events: mpsc::UnboundedSender<Event>,
    reader: Arc<ReaderConfig>,
) {
    for conn in 0u64.. {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: the established links carry on; back off rather
                // than spin on an accept that keeps failing.
                eprintln!("{who}: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = reader.pending.clone().try_acquire_owned() else {
            eprintln!("{who}: too many connections still in their handshake; dropped {addr}");
            continue;
        };
        let task = tokio::spawn(read_loop(
            conn,
            stream,
            addr.into(),
            events.clone(),
            reader.clone(),
            permit,
        ));
        let mut readers = reader.readers.lock().expect("readers lock");
        readers.retain(|_, h| !h.is_finished());
        readers.insert(conn, task.abort_handle());
    }
}

async fn read_loop(
    conn: u64,
    mut stream: Conn,
    addr: Arc<str>,
    events: mpsc::UnboundedSender<Event>,
    reader: Arc<ReaderConfig>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (limit, ours) = (reader.limit, &reader.ours);
    let send = |what| {
        events
            .send(Event {
                conn,
                addr: addr.clone(),
                what,
            })
            .is_ok()
    };
    let handshake =
        zmtp::io::handshake_with(&mut stream, SocketType::Pull, ours, &reader.mechanism);
    let within = reader.greeting_within.min(HANDSHAKE_WITHIN);
    let handshaken = timeout(within, handshake).await;
    drop(permit);
    let mut session = match handshaken {
        Ok(Ok((meta, session))) => {
            if !send(Ok(Arrival::Ready(meta))) {
                return;
            }
            session.map(Session::split)
        }
        Ok(Err(e)) => {
            send(Err(e));
            return;
        }
        Err(_) => {
            send(Err(ZmtpError::Io(std::io::ErrorKind::TimedOut.into())));
            return;
        }
    };
    loop {
        let opener = session.as_mut().map(|(_, open)| open);
        let what = match zmtp::io::receive(&mut stream, limit, MAX_FRAMES, opener).await {
            Ok(Inbound::Message(frames)) => Ok(Arrival::Message(frames)),
            Ok(Inbound::Command(Command::Ping { context, .. })) => {
                let sealer = session.as_mut().map(|(seal, _)| seal);
                let pong = Command::Pong { context };
                match zmtp::io::send_command(&mut stream, &pong, sealer).await {
                    Ok(()) => Ok(Arrival::Ping),
                    // The peer may have sent its last PING just before its BYE and closed the
                    // connection: the BYE is still ours to read. Keep reading; a connection that
                    // is really gone fails the next read.
                    Err(_) => continue,
                }
            }
            Ok(Inbound::Command(Command::Error(reason))) => Err(ZmtpError::PeerError(reason)),
            // PONG, and commands a PULL socket has no use for.
            Ok(Inbound::Command(_)) => continue,
            Err(e) => Err(e),
        };
        let end = what.is_err();
        if !send(what) || end {
            return;
        }
    }
}

/// Receives on this rank's endpoint until every peer has said bye or failed; returns the
/// trace of its uploads (received bytes becoming tensors on the rank's device).
pub(super) async fn pull_task(
    cfg: Arc<NetConfig>,
    listener: Listener,
    listen: Listen,
    links: HashMap<usize, Link>,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let mut tracer = Tracer::new(cfg.stage, 1, cfg.trace);
    pull_loop(cfg, listener, listen, links, to_compute, &mut tracer).await;
    tracer.into_events()
}

async fn pull_loop(
    cfg: Arc<NetConfig>,
    listener: Listener,
    listen: Listen,
    links: HashMap<usize, Link>,
    to_compute: ToCompute,
    tracer: &mut Tracer,
) {
    let k = cfg.stage;
    let Listen { endpoint, routes } = listen;
    let limit = routes.iter().map(|r| r.max_bytes).max().unwrap_or(0);
    let mut peers: Vec<usize> = routes.iter().map(|r| r.peer).collect();
    peers.sort_unstable();
    peers.dedup();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let readers: Readers = Default::default();
    let acceptor = tokio::spawn(accept_loop(
        format!("stage {k}: {endpoint}"),
        listener,
        tx,
        Arc::new(ReaderConfig {
            limit: limit.max(SMALL_FRAME),
            greeting_within: cfg.connect_timeout,
            ours: meta::ours(cfg.run_id, cfg.job_hash, k),
            mechanism: super::mechanism(&cfg, &endpoint, SocketType::Pull),
            pending: Arc::new(tokio::sync::Semaphore::new(PENDING_HANDSHAKES)),
            readers: readers.clone(),
        }),
    ));
    // Listening ends once every peer is known: nobody else has business on this endpoint.
    let mut acceptor = Some(AbortOnDrop(acceptor));
    let mut policy = LinkPolicy::new(LinkIdentity {
        rank: k,
        peers: peers.clone(),
        endpoint: endpoint.clone(),
        run_id: cfg.run_id,
        job_hash: cfg.job_hash,
    });
    let connect_deadline = Instant::now() + cfg.connect_timeout;
    // When each connected peer was last heard from (messages and heartbeats).
    let mut heard: HashMap<usize, Instant> = HashMap::new();
    let fail = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };
    loop {
        // The first peer to go silent, and when.
        let silent = heard
            .iter()
            .filter(|(p, _)| !policy.is_done(**p))
            .map(|(&p, &t)| (p, t + cfg.peer_timeout))
            .min_by_key(|&(_, t)| t);
        let deadline = match (policy.all_connected(), silent) {
            (true, Some((_, t))) => t,
            (true, None) => Instant::now() + cfg.peer_timeout,
            (false, Some((_, t))) => t.min(connect_deadline),
            (false, None) => connect_deadline,
        };
        let ev = match timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(_) => {
                return fail(match silent {
                    Some((p, t)) if t <= Instant::now() => {
                        policy.silent(p, cfg.peer_timeout.as_secs())
                    }
                    _ => policy.missing(cfg.connect_timeout.as_secs()),
                });
            }
        };
        let verdict = match ev.what {
            Ok(Arrival::Ready(meta)) => policy.on_ready(ev.conn, &meta),
            Ok(Arrival::Message(frames)) => policy.on_message(ev.conn, frames),
            Ok(Arrival::Ping) => Verdict::Nothing,
            Err(e) => policy.on_error(ev.conn, e),
        };
        // Whatever a peer sends (and its handshake completing) restarts its silence timer.
        if let Some(p) = policy.peer_of(ev.conn)
            && !matches!(verdict, Verdict::Refuse(_))
        {
            heard.insert(p, Instant::now());
        }
        match verdict {
            Verdict::Nothing => {}
            Verdict::Refuse(why) => {
                eprintln!(
                    "stage {k}: refused a message on {endpoint} (connection from: {}): {why}",
                    ev.addr
                );
                // A stranger gets no second chance: close its connection.
                if policy.peer_of(ev.conn).is_none()
                    && let Some(h) = readers.lock().expect("readers lock").remove(&ev.conn)
                {
                    h.abort();
                }
            }
            Verdict::Peer(p) => {
                heard.insert(p, Instant::now());
                if policy.all_connected() {
                    drop(acceptor.take());
                }
            }
            Verdict::Done(p) => {
                if let Some(l) = links.get(&p) {
                    l.done.store(true, Ordering::SeqCst);
                }
                if policy.all_done() {
                    return;
                }
            }
            Verdict::Fail(e) => return fail(e),
            Verdict::Tensor(peer, header, payload) => {
                let bad = |why: String| policy.bad(peer, why);
                let decoded = codec::decode_shared(&header, payload, limit)
                    .map_err(|e| bad(e.to_string()))
                    .and_then(|(h, data)| {
                        if h.run_id != cfg.run_id {
                            return Err(bad(format!(
                                "frame of run {:016x}, this is run {:016x}",
                                h.run_id, cfg.run_id
                            )));
                        }
                        let Some(route) = routes
                            .iter()
                            .find(|r| r.peer == peer && r.edge == h.edge && r.kind == h.kind)
                        else {
                            return Err(bad(format!(
                                "{:?} on edge {}, which rank {peer} does not send to this rank",
                                h.kind, h.edge
                            )));
                        };
                        let got: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
                        // Validation's last micro-batch may be short.
                        let fits = match h.kind {
                            codec::Kind::Eval => {
                                got.len() == route.shape.len()
                                    && got[1..] == route.shape[1..]
                                    && (1..=route.shape[0]).contains(&got[0])
                            }
                            // A ring segment: at most the plan's largest.
                            codec::Kind::Reduce => {
                                got.len() == 2 && got[0] == 1 && got[1] <= route.shape[1]
                            }
                            _ => got == route.shape,
                        };
                        if !fits {
                            return Err(bad(format!(
                                "tensor of shape {got:?}, the plan sends {:?} on edge {}",
                                route.shape, h.edge
                            )));
                        }
                        // On a GPU this is the host-to-device copy, here on the I/O thread so it
                        // overlaps the compute thread's work on the previous micro-batch.
                        let start = tracer.now();
                        // A plain device tensor: the stage enables autodiff on the compute
                        // thread, so the I/O thread never touches autodiff's state.
                        let tensor = codec::to_act(data, &cfg.device.clone().inner())
                            .map_err(|e| bad(e.to_string()))?;
                        tracer.record(Span::new(
                            "upload",
                            start,
                            tracer.now(),
                            h.step,
                            h.microbatch,
                        ));
                        Ok(Incoming {
                            edge: h.edge,
                            kind: h.kind,
                            step: h.step,
                            microbatch: h.microbatch,
                            tensor,
                        })
                    });
                match decoded {
                    Ok(inc) => {
                        if to_compute.send(Ok(inc)).is_err() {
                            return;
                        }
                    }
                    Err(e) => return fail(e),
                }
            }
        }
    }
}

/// Stops the accept loop (and so closes the listener) when the pull task ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
