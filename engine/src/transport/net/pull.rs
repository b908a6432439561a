//! The receiving side of one link (one edge, one direction): accepts connections on this
//! rank's endpoint ([`super::accept`]), asks the link's [`LinkPolicy`] what to do with every
//! message and read error, and hands the peer's tensors to the compute thread.
//! Which connection is the peer, and what is refused, is decided by the policy alone.

use super::accept::{Arrival, Event, PENDING_HANDSHAKES, ReaderConfig, Readers, accept_loop};
use super::link::{AbortOnDrop, FromIo, Link, NetConfig, ToCompute, mechanism};
use crate::allreduce::Values;
use crate::endpoints::{InRoute, Listen};
use crate::message::Incoming;
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use crate::transport::reducer::Segment;
use brigade_stages::codec;
use brigade_wire::Frame;
use brigade_wire::meta;
use brigade_wire::policy::{LinkIdentity, LinkPolicy, Verdict};
use brigade_wire::socket::Listener;
use brigade_wire::zmtp::SocketType;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Room for a header, a tag or a control message beside the plan's largest payload.
const SMALL_FRAME: u64 = 64 * 1024;

/// Receives on this rank's endpoint until every peer has said bye or failed; returns the
/// trace of its uploads (received bytes becoming tensors on the rank's device).
pub(super) async fn pull_task(
    cfg: Arc<NetConfig>,
    listener: Listener,
    listen: Listen,
    links: HashMap<usize, Link>,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let tracer = Tracer::new(cfg.stage, 1, cfg.trace);
    let (mut events, mut pull) = Pull::start(cfg, listener, listen, links, to_compute, tracer);
    pull_loop(&mut pull, &mut events).await;
    pull.tracer.into_events()
}

async fn pull_loop(pull: &mut Pull, events: &mut mpsc::UnboundedReceiver<Event>) {
    loop {
        let ev = match pull.next(events).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => return pull.fail(e),
        };
        if pull.handle(ev).await.is_break() {
            return;
        }
    }
}

/// One link's receiving side between events: the policy's state, who was heard from when,
/// and what it needs to turn a peer's message into a tensor.
struct Pull {
    cfg: Arc<NetConfig>,
    endpoint: String,
    routes: Vec<InRoute>,
    /// The plan's largest payload on this link.
    limit: u64,
    policy: LinkPolicy,
    /// When each connected peer was last heard from (messages and heartbeats).
    heard: HashMap<usize, Instant>,
    connect_deadline: Instant,
    readers: Readers,
    /// Listening ends once every peer is known: nobody else has business on this endpoint.
    acceptor: Option<AbortOnDrop>,
    links: HashMap<usize, Link>,
    to_compute: ToCompute,
    tracer: Tracer,
}

impl Pull {
    /// Starts accepting on `listener`; connections' events arrive on the returned channel.
    fn start(
        cfg: Arc<NetConfig>,
        listener: Listener,
        listen: Listen,
        links: HashMap<usize, Link>,
        to_compute: ToCompute,
        tracer: Tracer,
    ) -> (mpsc::UnboundedReceiver<Event>, Pull) {
        let k = cfg.stage;
        let Listen { endpoint, routes } = listen;
        let limit = routes.iter().map(|r| r.max_bytes).max().unwrap_or(0);
        let mut peers: Vec<usize> = routes.iter().map(|r| r.peer).collect();
        peers.sort_unstable();
        peers.dedup();
        let (tx, rx) = mpsc::unbounded_channel();
        let readers: Readers = Default::default();
        let acceptor = tokio::spawn(accept_loop(
            format!("stage {k}: {endpoint}"),
            listener,
            tx,
            Arc::new(ReaderConfig {
                limit: limit.max(SMALL_FRAME),
                greeting_within: cfg.connect_timeout,
                ours: meta::ours(cfg.run_id, cfg.job_hash, k),
                mechanism: mechanism(&cfg, &endpoint, SocketType::Pull),
                pending: Arc::new(tokio::sync::Semaphore::new(PENDING_HANDSHAKES)),
                readers: readers.clone(),
            }),
        ));
        let policy = LinkPolicy::new(LinkIdentity {
            rank: k,
            peers,
            endpoint: endpoint.clone(),
            run_id: cfg.run_id,
            job_hash: cfg.job_hash,
        });
        let pull = Pull {
            connect_deadline: Instant::now() + cfg.connect_timeout,
            cfg,
            endpoint,
            routes,
            limit,
            policy,
            heard: HashMap::new(),
            readers,
            acceptor: Some(AbortOnDrop(acceptor)),
            links,
            to_compute,
            tracer,
        };
        (rx, pull)
    }

    /// The next event (`None` once every reader and the acceptor are gone), or the error of
    /// a peer that went silent or never connected.
    async fn next(
        &self,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> Result<Option<Event>, TransportError> {
        let (policy, cfg) = (&self.policy, &self.cfg);
        // The first peer to go silent, and when.
        let silent = self
            .heard
            .iter()
            .filter(|(p, _)| !policy.is_done(**p))
            .map(|(&p, &t)| (p, t + cfg.peer_timeout))
            .min_by_key(|&(_, t)| t);
        let deadline = match (policy.all_connected(), silent) {
            (true, Some((_, t))) => t,
            (true, None) => Instant::now() + cfg.peer_timeout,
            (false, Some((_, t))) => t.min(self.connect_deadline),
            (false, None) => self.connect_deadline,
        };
        timeout_at(deadline, events.recv())
            .await
            .map_err(|_| match silent {
                Some((p, t)) if t <= Instant::now() => policy.silent(p, cfg.peer_timeout.as_secs()),
                _ => policy.missing(cfg.connect_timeout.as_secs()),
            })
    }

    /// Asks the policy about one event and carries out its verdict; breaks when the link is
    /// done or failed.
    async fn handle(&mut self, ev: Event) -> ControlFlow<()> {
        let verdict = match ev.what {
            Ok(Arrival::Ready(meta)) => self.policy.on_ready(ev.conn, &meta),
            Ok(Arrival::Message(frames)) => self.policy.on_message(ev.conn, frames),
            Ok(Arrival::Ping) => Verdict::Nothing,
            Err(e) => self.policy.on_error(ev.conn, e),
        };
        // Whatever a peer sends (and its handshake completing) restarts its silence timer.
        if let Some(p) = self.policy.peer_of(ev.conn)
            && !matches!(verdict, Verdict::Refuse(_))
        {
            self.heard.insert(p, Instant::now());
        }
        match verdict {
            Verdict::Nothing => {}
            Verdict::Refuse(why) => self.refuse(ev.conn, &ev.addr, &why),
            Verdict::Peer(p) => {
                self.heard.insert(p, Instant::now());
                if self.policy.all_connected() {
                    drop(self.acceptor.take());
                }
            }
            Verdict::Done(p) => {
                if let Some(l) = self.links.get(&p) {
                    l.done.store(true, Ordering::SeqCst);
                }
                if self.policy.all_done() {
                    return ControlFlow::Break(());
                }
            }
            Verdict::Fail(e) => {
                self.fail(e);
                return ControlFlow::Break(());
            }
            Verdict::Tensor(peer, header, payload) => {
                match self.tensor(peer, &header, payload).await {
                    Ok(got) => {
                        if self.to_compute.send(Ok(got)).is_err() {
                            return ControlFlow::Break(());
                        }
                    }
                    Err(e) => {
                        self.fail(e);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Logs a refused message; a stranger gets no second chance: its connection is closed.
    fn refuse(&self, conn: u64, addr: &str, why: &str) {
        let (k, endpoint) = (self.cfg.stage, &self.endpoint);
        eprintln!("stage {k}: refused a message on {endpoint} (connection from: {addr}): {why}");
        if self.policy.peer_of(conn).is_none()
            && let Some(h) = self.readers.lock().expect("readers lock").remove(&conn)
        {
            h.abort();
        }
    }

    /// Reports a fatal error to the compute thread.
    fn fail(&self, e: TransportError) {
        let _ = self.to_compute.send(Err(e));
    }

    /// Rank `peer`'s tensor message, checked against the plan and placed on the rank's
    /// device; a ring segment stays host values, for the reducer.
    async fn tensor(
        &mut self,
        peer: usize,
        header: &[u8],
        payload: Frame,
    ) -> Result<FromIo, TransportError> {
        let bad = |why: String| self.policy.bad(peer, why);
        let h = codec::decode_checked(header, payload.len(), self.limit)
            .map_err(|e| bad(e.to_string()))?;
        if h.run_id != self.cfg.run_id {
            return Err(bad(format!(
                "frame of run {:016x}, this is run {:016x}",
                h.run_id, self.cfg.run_id
            )));
        }
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.peer == peer && r.edge == h.edge && r.kind == h.kind)
        else {
            return Err(bad(format!(
                "{:?} on edge {}, which rank {peer} does not send to this rank",
                h.kind, h.edge
            )));
        };
        let got: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
        if !fits(h.kind, &got, &route.shape) {
            return Err(bad(format!(
                "tensor of shape {got:?}, the plan sends {:?} on edge {}",
                route.shape, h.edge
            )));
        }
        if h.kind == codec::Kind::Reduce {
            return segment(peer, h, payload).map_err(bad);
        }
        let data = codec::payload_data(&h, into_bytes(payload)).map_err(|e| bad(e.to_string()))?;
        // On a GPU this is the host-to-device copy, here on the I/O thread so it overlaps the
        // compute thread's work on the previous micro-batch.
        let start = self.tracer.now();
        // A plain device tensor: the stage enables autodiff on the compute thread, so the I/O
        // thread never touches autodiff's state.
        let device = self.cfg.device.clone().inner();
        let tensor = if device == burn::prelude::Device::flex() {
            codec::to_act(data, &device)
        } else {
            // A GPU upload can wait on the device for as long as the compute thread keeps it
            // (autotuning a first step took minutes on an H200): off this runtime's thread, so
            // the links' heartbeats go on meanwhile and the peers do not give this rank up.
            tokio::task::spawn_blocking(move || codec::to_act(data, &device))
                .await
                .map_err(|e| TransportError::Io {
                    stage: self.cfg.stage,
                    why: format!("the upload thread failed: {e}"),
                })?
        }
        .map_err(|e| self.policy.bad(peer, e.to_string()))?;
        let upload = Span::new("upload", start, self.tracer.now(), h.step, h.microbatch);
        self.tracer.record(upload);
        Ok(FromIo::Message(Box::new(Incoming {
            edge: h.edge,
            kind: h.kind,
            step: h.step,
            microbatch: h.microbatch,
            tensor,
        })))
    }
}

/// A ring segment from `peer`: its values read as f32 where the frame was read (aligned for
/// f32 or wider as read), copied value by value where they are not.
fn segment(peer: usize, h: codec::Header, payload: Frame) -> Result<FromIo, String> {
    if h.dtype != codec::WireDType::F32 {
        return Err(format!(
            "all-reduce segment of {:?}, rings sum f32",
            h.dtype
        ));
    }
    let values = match payload {
        Frame::U32(v) => Values::U32(v),
        Frame::U64(v) => Values::U64(v),
        other => Values::F32(
            other
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
    };
    Ok(FromIo::Segment(Segment {
        peer,
        edge: h.edge,
        step: h.step,
        tag: h.microbatch,
        values: values.into(),
    }))
}

/// Whether a received tensor of shape `got` fits the plan's `shape` for its kind.
fn fits(kind: codec::Kind, got: &[usize], shape: &[usize]) -> bool {
    match kind {
        // Validation's last micro-batch may be short.
        codec::Kind::Eval => {
            got.len() == shape.len() && got[1..] == shape[1..] && (1..=shape[0]).contains(&got[0])
        }
        // A ring segment: at most the plan's largest.
        codec::Kind::Reduce => got.len() == 2 && got[0] == 1 && got[1] <= shape[1],
        _ => got == shape,
    }
}

/// A received frame as burn's bytes: the vector it was read into, adopted without a copy.
fn into_bytes(frame: Frame) -> burn::tensor::Bytes {
    use burn::tensor::Bytes;
    match frame {
        Frame::U8(v) => Bytes::from_elems(v),
        Frame::U16(v) => Bytes::from_elems(v),
        Frame::U32(v) => Bytes::from_elems(v),
        Frame::U64(v) => Bytes::from_elems(v),
    }
}
