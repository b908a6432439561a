//! The I/O thread's tasks: one per socket. Pull tasks check and decode what arrives and hand
//! it to the compute thread; push tasks encode and send, and keep idle links alive.

use super::control::{Control, ControlKind};
use super::{Cmd, ZmqConfig, peer_index, source};
use crate::executor::core::{Incoming, Outgoing, Peer};
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use brigade_stages::codec::{self, Kind, Route};
use bytes::Bytes;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeromq::{PullSocket, PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

type ToCompute = Sender<Result<Incoming, TransportError>>;

/// How long `finish` waits for the neighbours' byes before exiting anyway: by then they have
/// received all they need from this stage (they could not have finished otherwise).
const LINGER: Duration = Duration::from_secs(3);

fn options() -> SocketOptions {
    let mut o = SocketOptions::default();
    // Activations are megabytes: read in large chunks.
    o.read_buffer(64 * 1024, 8 * 1024 * 1024, 2);
    o
}

pub(super) async fn io_main(
    cfg: ZmqConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    to_compute: ToCompute,
    ready: Sender<Result<(), TransportError>>,
) {
    let k = cfg.stage;
    let cfg = Arc::new(cfg);
    // Neighbours that said bye: their silence afterwards is expected.
    let prev_done = Arc::new(AtomicBool::new(false));
    let next_done = Arc::new(AtomicBool::new(false));

    let mut pulls = Vec::new();
    for (endpoint, kind, done) in [
        (
            cfg.endpoints.act_in.clone(),
            Kind::Activation,
            prev_done.clone(),
        ),
        (
            cfg.endpoints.grad_in.clone(),
            Kind::Gradient,
            next_done.clone(),
        ),
    ] {
        let Some(endpoint) = endpoint else { continue };
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            // A socket file left by a crashed run with the same id would make bind fail.
            let _ = std::fs::remove_file(path);
        }
        let mut sock = PullSocket::with_options(options());
        if let Err(e) = sock.bind(&endpoint).await {
            let _ = ready.send(Err(TransportError::Bind {
                stage: k,
                address: endpoint,
                why: e.to_string(),
            }));
            return;
        }
        pulls.push(tokio::spawn(pull_task(
            cfg.clone(),
            sock,
            endpoint,
            kind,
            done,
            to_compute.clone(),
        )));
    }
    let _ = ready.send(Ok(()));

    let mut pushes = Vec::new();
    let mut routes: Vec<(Peer, mpsc::UnboundedSender<Option<Outgoing>>)> = Vec::new();
    for (endpoint, to, done) in [
        (cfg.endpoints.act_out.clone(), Peer::Next, next_done.clone()),
        (
            cfg.endpoints.grad_out.clone(),
            Peer::Prev,
            prev_done.clone(),
        ),
    ] {
        let Some(endpoint) = endpoint else { continue };
        let (tx, rx) = mpsc::unbounded_channel();
        routes.push((to, tx));
        pushes.push(tokio::spawn(push_task(
            cfg.clone(),
            endpoint,
            to,
            rx,
            done,
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

async fn pull_task(
    cfg: Arc<ZmqConfig>,
    mut sock: PullSocket,
    endpoint: String,
    kind: Kind,
    done: Arc<AtomicBool>,
    to_compute: ToCompute,
) {
    let k = cfg.stage;
    let peer = source(k, kind);
    let shape = if kind == Kind::Activation {
        cfg.act_in_shape.clone()
    } else {
        cfg.grad_in_shape.clone()
    };
    // The largest payload the plan allows on this link (f32 or i64 elements).
    let limit = shape.iter().product::<usize>() as u64 * 8;
    let mut hello = false;
    let fail = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };
    loop {
        let wait = if hello {
            cfg.peer_timeout
        } else {
            cfg.connect_timeout
        };
        let msg = match timeout(wait, sock.recv()).await {
            Err(_) if hello => {
                return fail(TransportError::PeerLost {
                    stage: k,
                    peer,
                    address: endpoint,
                    why: format!("no message or heartbeat for {} s", wait.as_secs()),
                });
            }
            Err(_) => {
                return fail(TransportError::Unreachable {
                    stage: k,
                    peer,
                    address: endpoint,
                    secs: wait.as_secs(),
                    why: "it never connected".into(),
                });
            }
            Ok(Err(e)) => {
                if !done.load(Ordering::SeqCst) {
                    fail(TransportError::PeerLost {
                        stage: k,
                        peer,
                        address: endpoint,
                        why: format!("connection failed: {e}"),
                    });
                }
                return;
            }
            Ok(Ok(m)) => m,
        };
        let frames = msg.into_vec();
        let bad = |why: String| TransportError::BadFrame {
            stage: k,
            peer,
            address: endpoint.clone(),
            why,
        };
        match frames.len() {
            1 => match Control::decode_checked(&frames[0], cfg.run_id, cfg.topology_hash, peer) {
                Ok(c) => match c.kind {
                    ControlKind::Hello => hello = true,
                    ControlKind::Heartbeat => {}
                    ControlKind::Bye => {
                        done.store(true, Ordering::SeqCst);
                        return;
                    }
                },
                Err(why) => {
                    eprintln!("stage {k}: refused peer on {endpoint}: {why}");
                    return fail(TransportError::Refused {
                        stage: k,
                        address: endpoint,
                        why,
                    });
                }
            },
            2 if hello => {
                let decoded = codec::decode(&frames[0], frames[1].to_vec(), limit)
                    .map_err(|e| bad(e.to_string()))
                    .and_then(|(h, data)| {
                        if h.run_id != cfg.run_id {
                            return Err(bad(format!(
                                "frame of run {:016x}, this is run {:016x}",
                                h.run_id, cfg.run_id
                            )));
                        }
                        if h.kind != kind {
                            return Err(bad(format!(
                                "{:?} frame on the {kind:?} connection",
                                h.kind
                            )));
                        }
                        let got: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
                        if got != shape {
                            return Err(bad(format!(
                                "tensor of shape {got:?}, the plan sends {shape:?}"
                            )));
                        }
                        let tensor =
                            codec::to_act(data, &cfg.device).map_err(|e| bad(e.to_string()))?;
                        Ok(Incoming {
                            kind,
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
            2 => return fail(bad("tensor before the hello handshake".into())),
            n => return fail(bad(format!("message of {n} frames"))),
        }
    }
}

async fn push_task(
    cfg: Arc<ZmqConfig>,
    endpoint: String,
    to: Peer,
    mut rx: mpsc::UnboundedReceiver<Option<Outgoing>>,
    done: Arc<AtomicBool>,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let k = cfg.stage;
    let peer = peer_index(k, to);
    let mut tracer = Tracer::new(k, 1, cfg.trace);
    let control = |kind| {
        ZmqMessage::from(Bytes::from(
            Control::new(kind, cfg.run_id, cfg.topology_hash, k).encode(),
        ))
    };
    let lost = |why: String| TransportError::PeerLost {
        stage: k,
        peer,
        address: endpoint.clone(),
        why,
    };

    let mut opts = options();
    opts.connect_timeout(cfg.connect_timeout);
    let mut sock = PushSocket::with_options(opts);
    if let Err(e) = sock.connect(&endpoint).await {
        let _ = to_compute.send(Err(TransportError::Unreachable {
            stage: k,
            peer,
            address: endpoint.clone(),
            secs: cfg.connect_timeout.as_secs(),
            why: e.to_string(),
        }));
        return tracer.into_events();
    }
    if let Err(why) = send(&mut sock, control(ControlKind::Hello), cfg.peer_timeout).await {
        let _ = to_compute.send(Err(lost(why)));
        return tracer.into_events();
    }
    let mut beat = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Some(out)) => {
                    let start = tracer.now();
                    let route = Route { run_id: cfg.run_id, step: out.step, microbatch: out.microbatch, kind: out.kind };
                    let (header, payload) = match codec::encode(route, out.tensor.to_data()) {
                        Ok(frames) => frames,
                        Err(e) => {
                            let _ = to_compute.send(Err(TransportError::Io { stage: k, why: e.to_string() }));
                            return tracer.into_events();
                        }
                    };
                    let mut msg = ZmqMessage::from(Bytes::from(header));
                    msg.push_back(Bytes::from(payload));
                    if let Err(why) = send(&mut sock, msg, cfg.peer_timeout).await {
                        let _ = to_compute.send(Err(lost(why)));
                        return tracer.into_events();
                    }
                    tracer.record(Span::new("send", start, tracer.now(), out.step, out.microbatch));
                }
                Some(None) | None => {
                    // Best effort: a neighbour that already left needs no goodbye.
                    let _ = send(&mut sock, control(ControlKind::Bye), cfg.peer_timeout).await;
                    return tracer.into_events();
                }
            },
            _ = beat.tick() => {
                if done.load(Ordering::SeqCst) {
                    continue;
                }
                if let Err(why) = send(&mut sock, control(ControlKind::Heartbeat), cfg.peer_timeout).await {
                    // It may have said bye while we were sending.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if !done.load(Ordering::SeqCst) {
                        let _ = to_compute.send(Err(lost(why)));
                        return tracer.into_events();
                    }
                }
            }
        }
    }
}

async fn send(sock: &mut PushSocket, msg: ZmqMessage, limit: Duration) -> Result<(), String> {
    match timeout(limit, sock.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send failed: {e}")),
        Err(_) => Err(format!(
            "send did not complete within {} s",
            limit.as_secs()
        )),
    }
}
