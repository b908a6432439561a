//! The task behind one PULL socket: checks and decodes what arrives from one neighbour and
//! hands it to the compute thread.

use super::ZmqConfig;
use super::auth;
use super::control::{Control, ControlKind};
use super::source;
use super::tasks::{Link, ToCompute};
use crate::executor::core::Incoming;
use crate::transport::TransportError;
use brigade_stages::codec::{self, Kind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::time::timeout;
use zeromq::{PullSocket, SocketRecv};

pub(super) async fn pull_task(
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
