//! The I/O thread's tasks: one per socket. Pull tasks check and decode what arrives and hand
//! it to the compute thread; push tasks encode and send, and keep idle links alive.

use super::auth;
use super::control::{Control, ControlKind};
use super::{Cmd, ZmqConfig, peer_index, source};
use crate::executor::core::{Incoming, Outgoing, Peer};
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use brigade_stages::codec::{self, Kind, Route};
use bytes::Bytes;
use crossbeam_channel::Sender;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use zeromq::{
    PullSocket, PushSocket, Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage,
};

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

/// What the pull and push tasks of one neighbour share.
#[derive(Clone)]
struct Link {
    /// Sent in our hello, answered by the peer on its connection to us.
    own_challenge: [u8; 16],
    /// The peer's challenge, from its hello, which our push task answers.
    peer_challenge: watch::Receiver<Option<Vec<u8>>>,
    peer_challenge_tx: Arc<watch::Sender<Option<Vec<u8>>>>,
    /// The peer said bye: its silence afterwards is expected.
    done: Arc<AtomicBool>,
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
    cfg: ZmqConfig,
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
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            // A socket file left by a crashed run with the same id would make bind fail.
            let _ = std::fs::remove_file(path);
        }
        let mut sock = PullSocket::with_options(options());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let mut monitor = sock.monitor();
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Some(ev) = monitor.next().await {
                if let SocketEvent::Accepted(ep, _) = ev {
                    seen.lock().expect("monitor lock").push(ep.to_string());
                }
            }
        });
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
            link,
            accepted,
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
        pushes.push(tokio::spawn(push_task(
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

async fn pull_task(
    cfg: Arc<ZmqConfig>,
    mut sock: PullSocket,
    endpoint: String,
    kind: Kind,
    link: Link,
    accepted: Arc<Mutex<Vec<String>>>,
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
    let secret = cfg.secret.clone();
    let mut hello = false;
    let mut key: Option<[u8; 32]> = None;
    let mut seq = 0u64;
    let mut last_refusal: Option<String> = None;
    let fail = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };
    // Under a secret, what fails authentication is logged and dropped (a stranger cannot end
    // the job); without one, a mismatch is a mis-wired job and fatal.
    let refuse = |why: String, last: &mut Option<String>| {
        let from = accepted.lock().expect("monitor lock").join(", ");
        eprintln!(
            "stage {k}: refused a message on {endpoint} (connections from: {}): {why}",
            if from.is_empty() { "unknown" } else { &from }
        );
        *last = Some(why);
    };
    loop {
        let ready = hello && (secret.is_none() || key.is_some());
        let wait = if ready {
            cfg.peer_timeout
        } else {
            cfg.connect_timeout
        };
        let msg = match timeout(wait, sock.recv()).await {
            Err(_) if ready => {
                return fail(TransportError::PeerLost {
                    stage: k,
                    peer,
                    address: endpoint,
                    why: format!("no message or heartbeat for {} s", wait.as_secs()),
                });
            }
            Err(_) => {
                return fail(match last_refusal {
                    Some(why) => TransportError::Refused {
                        stage: k,
                        address: endpoint,
                        why: format!(
                            "no authenticated peer within {} s; last refusal: {why}",
                            wait.as_secs()
                        ),
                    },
                    None => TransportError::NeverConnected {
                        stage: k,
                        peer,
                        address: endpoint,
                        secs: wait.as_secs(),
                    },
                });
            }
            Ok(Err(e)) => {
                if !link.done.load(Ordering::SeqCst) {
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
        let mut frames = msg.into_vec();
        if let Some(key) = &key {
            let tagged = frames.len() >= 2 && {
                let t = frames.last().expect("two frames or more");
                let body: Vec<&[u8]> = frames[..frames.len() - 1]
                    .iter()
                    .map(|f| f.as_ref())
                    .collect();
                t.len() == auth::TAG_LEN && auth::tag(key, seq, &body)[..] == t[..]
            };
            if !tagged {
                refuse(
                    "bad or missing message tag (not from the authenticated peer, or replayed)"
                        .into(),
                    &mut last_refusal,
                );
                continue;
            }
            frames.pop();
            seq += 1;
        }
        let bad = |why: String| TransportError::BadFrame {
            stage: k,
            peer,
            address: endpoint.clone(),
            why,
        };
        match frames.len() {
            1 => {
                match Control::decode_checked(&frames[0], cfg.run_id, cfg.topology_hash, peer) {
                    Ok(c) => match c.kind {
                        ControlKind::Hello => {
                            hello = true;
                            if let Some(ch) = c.bytes {
                                let _ = link.peer_challenge_tx.send(Some(ch));
                            }
                        }
                        ControlKind::Auth => {
                            let Some(secret) = &secret else { continue };
                            let answer = c.bytes.unwrap_or_default();
                            if auth::verify(
                                secret,
                                cfg.run_id,
                                cfg.topology_hash,
                                peer,
                                k,
                                &link.own_challenge,
                                &answer,
                            ) {
                                key = Some(auth::frame_key(
                                    secret,
                                    cfg.run_id,
                                    cfg.topology_hash,
                                    peer,
                                    k,
                                    &link.own_challenge,
                                ));
                                seq = 0;
                            } else {
                                refuse("authentication failed: the peer does not have this job's secret".into(), &mut last_refusal);
                            }
                        }
                        ControlKind::Heartbeat => {}
                        ControlKind::Bye => {
                            link.done.store(true, Ordering::SeqCst);
                            return;
                        }
                    },
                    Err(why) if secret.is_some() => refuse(why, &mut last_refusal),
                    Err(why) => {
                        return fail(TransportError::Refused {
                            stage: k,
                            address: endpoint,
                            why,
                        });
                    }
                }
            }
            2 if ready => {
                // The received frame becomes the tensor's bytes without a copy when it is aligned
                // for its elements; a frame at an odd offset in the read buffer is copied.
                let frame = frames.pop().expect("two frames");
                let payload = if (frame.as_ptr() as usize).is_multiple_of(8) {
                    burn::tensor::Bytes::from_shared(
                        frame,
                        burn::tensor::AllocationProperty::Native,
                    )
                } else {
                    aligned_copy(&frame)
                };
                let decoded = codec::decode_shared(&frames[0], payload, limit)
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
            2 if secret.is_some() => {
                refuse("a tensor before authentication".into(), &mut last_refusal)
            }
            2 => return fail(bad("tensor before the hello handshake".into())),
            n => return fail(bad(format!("message of {n} frames"))),
        }
    }
}

/// `bytes` copied into storage aligned for any wire element type (its length kept exact).
fn aligned_copy(bytes: &[u8]) -> burn::tensor::Bytes {
    fn copy<E: bytemuck::NoUninit + Send + Sync>(bytes: &[u8]) -> burn::tensor::Bytes {
        let n = bytes.len() / std::mem::size_of::<E>();
        let mut out: Vec<E> = Vec::with_capacity(n);
        // SAFETY: the copy fills exactly the n elements' bytes of the new allocation, and any
        // bit pattern is a valid E (plain integers), so they are initialised before set_len.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
            out.set_len(n);
        }
        burn::tensor::Bytes::from_elems(out)
    }
    match bytes.len() {
        n if n % 8 == 0 => copy::<u64>(bytes),
        n if n % 4 == 0 => copy::<u32>(bytes),
        n if n % 2 == 0 => copy::<u16>(bytes),
        _ => copy::<u8>(bytes),
    }
}

/// burn's tensor bytes as the owner of a zeromq frame.
struct Payload(burn::tensor::Bytes);

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Sends messages to one neighbour, tagging them once authenticated.
struct LinkSender {
    sock: PushSocket,
    key: Option<[u8; 32]>,
    seq: u64,
    limit: Duration,
}

impl LinkSender {
    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), String> {
        let mut frames = frames;
        if let Some(key) = &self.key {
            let body: Vec<&[u8]> = frames.iter().map(|f| f.as_ref()).collect();
            let t = auth::tag(key, self.seq, &body);
            frames.push(Bytes::copy_from_slice(&t));
            self.seq += 1;
        }
        let mut it = frames.into_iter();
        let mut msg = ZmqMessage::from(it.next().expect("at least one frame"));
        for f in it {
            msg.push_back(f);
        }
        match timeout(self.limit, self.sock.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {e}")),
            Err(_) => Err(format!(
                "send did not complete within {} s",
                self.limit.as_secs()
            )),
        }
    }
}

async fn push_task(
    cfg: Arc<ZmqConfig>,
    endpoint: String,
    to: Peer,
    mut rx: mpsc::UnboundedReceiver<Option<Outgoing>>,
    mut link: Link,
    to_compute: ToCompute,
) -> Vec<TraceEvent> {
    let k = cfg.stage;
    let peer = peer_index(k, to);
    let mut tracer = Tracer::new(k, 1, cfg.trace);
    let control = |kind| Bytes::from(Control::new(kind, cfg.run_id, cfg.topology_hash, k).encode());
    let lost = |why: String| TransportError::PeerLost {
        stage: k,
        peer,
        address: endpoint.clone(),
        why,
    };
    let report = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };

    let mut opts = options();
    opts.connect_timeout(cfg.connect_timeout);
    let mut sock = PushSocket::with_options(opts);
    if let Err(e) = sock.connect(&endpoint).await {
        report(TransportError::Unreachable {
            stage: k,
            peer,
            address: endpoint.clone(),
            secs: cfg.connect_timeout.as_secs(),
            why: e.to_string(),
        });
        return tracer.into_events();
    }
    let mut out = LinkSender {
        sock,
        key: None,
        seq: 0,
        limit: cfg.peer_timeout,
    };
    let mut hello = Control::new(ControlKind::Hello, cfg.run_id, cfg.topology_hash, k);
    if cfg.secret.is_some() {
        hello = hello.with_bytes(&link.own_challenge);
    }
    if let Err(why) = out.send(vec![Bytes::from(hello.encode())]).await {
        report(lost(why));
        return tracer.into_events();
    }
    if let Some(secret) = &cfg.secret {
        // Answer the peer's challenge, which arrives in its hello on our pull socket.
        let challenge: Option<Vec<u8>> = match timeout(
            cfg.connect_timeout,
            link.peer_challenge.wait_for(Option::is_some),
        )
        .await
        {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        };
        let challenge = match challenge {
            Some(c) => c,
            None => {
                report(TransportError::NeverConnected {
                    stage: k,
                    peer,
                    address: endpoint.clone(),
                    secs: cfg.connect_timeout.as_secs(),
                });
                return tracer.into_events();
            }
        };
        let answer = auth::answer(secret, cfg.run_id, cfg.topology_hash, k, peer, &challenge);
        let msg =
            Control::new(ControlKind::Auth, cfg.run_id, cfg.topology_hash, k).with_bytes(&answer);
        if let Err(why) = out.send(vec![Bytes::from(msg.encode())]).await {
            report(lost(why));
            return tracer.into_events();
        }
        out.key = Some(auth::frame_key(
            secret,
            cfg.run_id,
            cfg.topology_hash,
            k,
            peer,
            &challenge,
        ));
    }
    let mut beat = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Some(msg)) => {
                    let start = tracer.now();
                    let route = Route { run_id: cfg.run_id, step: msg.step, microbatch: msg.microbatch, kind: msg.kind };
                    let (header, payload) = match codec::encode_shared(route, msg.tensor.to_data()) {
                        Ok(frames) => frames,
                        Err(e) => {
                            report(TransportError::Io { stage: k, why: e.to_string() });
                            return tracer.into_events();
                        }
                    };
                    // The payload frame borrows the tensor's bytes: no copy between burn and the wire.
                    if let Err(why) = out.send(vec![Bytes::from(header), Bytes::from_owner(Payload(payload))]).await {
                        report(lost(why));
                        return tracer.into_events();
                    }
                    tracer.record(Span::new("send", start, tracer.now(), msg.step, msg.microbatch));
                }
                Some(None) | None => {
                    // Best effort: a neighbour that already left needs no goodbye.
                    let _ = out.send(vec![control(ControlKind::Bye)]).await;
                    return tracer.into_events();
                }
            },
            _ = beat.tick() => {
                if link.done.load(Ordering::SeqCst) {
                    continue;
                }
                if let Err(why) = out.send(vec![control(ControlKind::Heartbeat)]).await {
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

#[cfg(test)]
mod tests {
    #[test]
    fn aligned_copy_keeps_bytes_and_length() {
        let src: Vec<u8> = (0..=40).collect();
        for start in 0..5 {
            for end in [start + 1, start + 6, start + 8, 41] {
                let b = super::aligned_copy(&src[start..end]);
                assert_eq!(&b[..], &src[start..end]);
                let len = end - start;
                let align = [8, 4, 2, 1].into_iter().find(|a| len % a == 0).unwrap();
                assert_eq!(
                    (b.as_ptr() as usize) % align,
                    0,
                    "{len} bytes must be {align}-aligned"
                );
            }
        }
    }
}
