//! The task behind one PUSH socket: encodes and sends to one neighbour, tags messages once
//! authenticated, and keeps an idle link alive with heartbeats.

use super::ZmqConfig;
use super::auth;
use super::control::{Control, ControlKind};
use super::peer_index;
use super::tasks::{Link, ToCompute, options};
use crate::executor::core::{Outgoing, Peer};
use crate::trace::{Span, TraceEvent, Tracer};
use crate::transport::TransportError;
use brigade_stages::codec::{self, Route};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeromq::{PushSocket, Socket, SocketSend, ZmqMessage};

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

pub(super) async fn push_task(
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
