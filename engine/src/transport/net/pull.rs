//! The receiving side of one link (one edge, one direction): accepts connections on this stage's endpoint,
//! reads each with [`super::wire`], and hands what the authenticated peer sends to the
//! compute thread.
//!
//! Every connection has its own handshake state. The first connection that says a valid hello
//! (and, under a job secret, answers this stage's challenge) becomes *the peer*; whatever other
//! connections send — a stranger's greeting, oversized frames, forged tensors — is logged with
//! their address and dropped, and never ends the job. The peer's own faults are fatal: it was
//! authenticated, so a bad frame from it means a broken or mismatched brigade.

use super::NetConfig;
use super::auth;
use super::control::{Control, ControlKind, Mismatch};
use super::socket::{Conn, Listener};
use super::tasks::{Link, ToCompute};
use super::wire::{self, Frame, WireError};
use crate::endpoints::InLink;
use crate::executor::core::Incoming;
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
    what: Result<Vec<Frame>, WireError>,
}

/// Handshake state of one connection.
#[derive(Default)]
struct ConnState {
    hello: bool,
    key: Option<[u8; 32]>,
    seq: u64,
}

/// Accepts connections and starts a reader for each, until the pull task ends.
async fn accept_loop(
    who: String,
    listener: Listener,
    events: mpsc::UnboundedSender<Event>,
    limit: u64,
    greeting_within: std::time::Duration,
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
        tokio::spawn(read_loop(
            conn,
            stream,
            addr.into(),
            events.clone(),
            limit,
            greeting_within,
        ));
    }
}

async fn read_loop(
    conn: u64,
    mut stream: Conn,
    addr: Arc<str>,
    events: mpsc::UnboundedSender<Event>,
    limit: u64,
    greeting_within: std::time::Duration,
) {
    let send = |what| {
        events
            .send(Event {
                conn,
                addr: addr.clone(),
                what,
            })
            .is_ok()
    };
    let greeted = match timeout(greeting_within, wire::read_greeting(&mut stream)).await {
        Ok(r) => r,
        Err(_) => Err(WireError::Io(std::io::ErrorKind::TimedOut.into())),
    };
    if let Err(e) = greeted {
        send(Err(e));
        return;
    }
    loop {
        let m = wire::read_message(&mut stream, limit).await;
        let end = m.is_err();
        if !send(m) || end {
            return;
        }
    }
}

pub(super) async fn pull_task(
    cfg: Arc<NetConfig>,
    listener: Listener,
    inbound: InLink,
    link: Link,
    to_compute: ToCompute,
) {
    let k = cfg.stage;
    let InLink {
        edge,
        kind,
        peer,
        endpoint,
        shape,
        max_bytes: limit,
    } = inbound;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let acceptor = tokio::spawn(accept_loop(
        format!("stage {k}: {endpoint}"),
        listener,
        tx,
        limit.max(SMALL_FRAME),
        cfg.connect_timeout,
    ));
    // Listening ends once the peer is known: nobody else has business on this endpoint.
    let mut acceptor = Some(AbortOnDrop(acceptor));

    let secret = cfg.secret.clone();
    let from_peer = auth::Between {
        run_id: cfg.run_id,
        job_hash: cfg.job_hash,
        from: peer,
        to: k,
    };
    let mut conns: HashMap<u64, ConnState> = HashMap::new();
    // The connection that completed the handshake.
    let mut the_peer: Option<u64> = None;
    let mut deadline = Instant::now() + cfg.connect_timeout;
    let mut last_refusal: Option<String> = None;
    let fail = |e: TransportError| {
        let _ = to_compute.send(Err(e));
    };
    let refuse = |addr: &str, why: String, last: &mut Option<String>| {
        eprintln!("stage {k}: refused a message on {endpoint} (connection from: {addr}): {why}");
        *last = Some(why);
    };
    let bad = |why: String| TransportError::BadFrame {
        stage: k,
        peer,
        address: endpoint.clone(),
        why,
    };
    loop {
        let ev = match timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(_) if the_peer.is_some() => {
                return fail(TransportError::PeerLost {
                    stage: k,
                    peer,
                    address: endpoint.clone(),
                    why: format!(
                        "no message or heartbeat for {} s",
                        cfg.peer_timeout.as_secs()
                    ),
                });
            }
            Err(_) => {
                let secs = cfg.connect_timeout.as_secs();
                return fail(match last_refusal {
                    Some(why) => TransportError::Refused {
                        stage: k,
                        address: endpoint.clone(),
                        why: format!("no authenticated peer within {secs} s; last refusal: {why}"),
                    },
                    None => TransportError::NeverConnected {
                        stage: k,
                        peer,
                        address: endpoint.clone(),
                        secs,
                    },
                });
            }
        };
        let is_peer = the_peer == Some(ev.conn);
        let mut frames = match ev.what {
            Ok(frames) => frames,
            Err(e) if !is_peer => {
                if !matches!(e, WireError::Closed) {
                    refuse(&ev.addr, e.to_string(), &mut last_refusal);
                }
                conns.remove(&ev.conn);
                continue;
            }
            Err(_) if link.done.load(Ordering::SeqCst) => return,
            Err(e @ (WireError::TooLarge { .. } | WireError::FrameCount(_))) => {
                return fail(bad(e.to_string()));
            }
            Err(e) => {
                return fail(TransportError::PeerLost {
                    stage: k,
                    peer,
                    address: endpoint.clone(),
                    why: e.to_string(),
                });
            }
        };
        let state = conns.entry(ev.conn).or_default();
        if let Some(key) = &state.key {
            let tagged = frames.len() >= 2 && {
                let t = frames.last().expect("two frames or more");
                let body: Vec<&[u8]> = frames[..frames.len() - 1].iter().map(|f| &f[..]).collect();
                t.len() == auth::TAG_LEN && auth::tag(key, state.seq, &body)[..] == t[..]
            };
            if !tagged {
                refuse(
                    &ev.addr,
                    "bad or missing message tag (not from the authenticated peer, or replayed)"
                        .into(),
                    &mut last_refusal,
                );
                continue;
            }
            frames.pop();
            state.seq += 1;
        }
        if is_peer {
            deadline = Instant::now() + cfg.peer_timeout;
        }
        match frames.len() {
            1 => {
                let c = match Control::decode_checked(&frames[0], cfg.run_id, cfg.job_hash, peer) {
                    Ok(c) => c,
                    Err(why) if secret.is_some() || the_peer.is_some() => {
                        refuse(&ev.addr, why.to_string(), &mut last_refusal);
                        continue;
                    }
                    // Without a secret, a brigade of another run or plan on this address is a
                    // mis-wired job: say so now rather than at the timeout.
                    Err(Mismatch::Plan(why)) => {
                        return fail(TransportError::OtherPlan {
                            stage: k,
                            address: endpoint.clone(),
                            why,
                        });
                    }
                    Err(Mismatch::Other(why)) => {
                        return fail(TransportError::Refused {
                            stage: k,
                            address: endpoint.clone(),
                            why,
                        });
                    }
                };
                match c.kind {
                    ControlKind::Hello if the_peer.is_some() && !is_peer => refuse(
                        &ev.addr,
                        format!("a second connection claims to be rank {peer}"),
                        &mut last_refusal,
                    ),
                    ControlKind::Hello => match &secret {
                        None => {
                            state.hello = true;
                            the_peer = Some(ev.conn);
                            drop(acceptor.take());
                            deadline = Instant::now() + cfg.peer_timeout;
                        }
                        Some(secret) => {
                            let signed = c.bytes.unwrap_or_default();
                            match from_peer.verify_hello(secret, &signed) {
                                Some(ch) => {
                                    state.hello = true;
                                    // The first signed hello's challenge is the one answered.
                                    link.peer_challenge_tx.send_if_modified(|c| {
                                        c.is_none() && {
                                            *c = Some(ch);
                                            true
                                        }
                                    });
                                }
                                None => refuse(
                                    &ev.addr,
                                    "authentication failed: the peer's hello is not signed with this job's secret".into(),
                                    &mut last_refusal,
                                ),
                            }
                        }
                    },
                    ControlKind::Auth => {
                        let Some(secret) = &secret else { continue };
                        let answer = c.bytes.unwrap_or_default();
                        let ok = the_peer.is_none()
                            && state.hello
                            && from_peer.verify(secret, &link.own_challenge, &answer);
                        if ok {
                            state.key = Some(from_peer.frame_key(secret, &link.own_challenge));
                            state.seq = 0;
                            the_peer = Some(ev.conn);
                            drop(acceptor.take());
                            deadline = Instant::now() + cfg.peer_timeout;
                        } else {
                            refuse(
                                &ev.addr,
                                "authentication failed: the peer does not have this job's secret"
                                    .into(),
                                &mut last_refusal,
                            );
                        }
                    }
                    ControlKind::Heartbeat => {}
                    ControlKind::Bye if is_peer => {
                        link.done.store(true, Ordering::SeqCst);
                        return;
                    }
                    ControlKind::Bye => {}
                }
            }
            2 if is_peer => {
                let payload = frames.pop().expect("two frames");
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
                            edge,
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
            2 if secret.is_some() || the_peer.is_some() => refuse(
                &ev.addr,
                "a tensor from a connection that has not authenticated".into(),
                &mut last_refusal,
            ),
            2 => return fail(bad("tensor before the hello handshake".into())),
            n if is_peer => return fail(bad(format!("message of {n} frames"))),
            n => refuse(
                &ev.addr,
                format!("message of {n} frames"),
                &mut last_refusal,
            ),
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
