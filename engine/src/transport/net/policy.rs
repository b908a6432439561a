//! The receive path's per-connection policy, as a pure state machine: what a link's listener
//! does with each message or read error from each connection — greeting and limit failures,
//! the hello/auth handshake, message tags, peer or stranger. No sockets, no clock: the pull
//! task feeds it events and carries out the [`Verdict`]s, and the tests below drive it with
//! tables.
//!
//! The rules: the first connection that completes the handshake (ZMTP READY metadata naming
//! this job, run and the expected rank; under a job secret, also a signed hello and the answer
//! to this rank's challenge) becomes *the peer*. Whatever
//! other connections send is refused (logged with their address) and never ends the job. The
//! peer's own faults are fatal: it was authenticated, so a bad frame from it means a broken or
//! mismatched brigade. Without a secret, a brigade of another run or plan saying hello is a
//! mis-wired job and fails at once rather than at the connect timeout.

use super::auth;
use super::control::{Control, ControlKind, Mismatch, check_identity, mismatch};
use super::meta;
use super::wire::Frame;
use super::zmtp::{Metadata, ZmtpError};
use crate::transport::TransportError;
use std::collections::HashMap;

/// What the link is and whom it expects.
#[derive(Debug, Clone)]
pub(super) struct LinkIdentity {
    /// This rank.
    pub rank: usize,
    /// The rank allowed to send on this link.
    pub peer: usize,
    /// Where this rank listens (for messages).
    pub endpoint: String,
    pub run_id: u64,
    pub job_hash: u64,
    pub secret: Option<Vec<u8>>,
    /// The challenge this rank sent in its own hello, which the peer must answer.
    pub own_challenge: [u8; 16],
}

/// What the pull task must do with one event.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Nothing (a heartbeat, a stranger's clean close, a bye from a stranger).
    Nothing,
    /// Log this refusal of a stranger's message and carry on.
    Refuse(String),
    /// This connection is now the peer: stop accepting connections, start the peer timeout.
    Peer,
    /// The peer's challenge (from its signed hello): the push task answers it.
    Challenge(Vec<u8>),
    /// A tensor message from the peer (header, payload), its tag already checked and removed.
    Tensor(Frame, Frame),
    /// The peer said bye, or closed the connection after it: the link is done.
    Done,
    /// The link failed.
    Fail(TransportError),
}

/// Handshake state of one connection.
#[derive(Debug, Default)]
struct Conn {
    hello: bool,
    key: Option<[u8; 32]>,
    seq: u64,
}

/// The policy of one link (one edge, one direction).
#[derive(Debug)]
pub(super) struct LinkPolicy {
    id: LinkIdentity,
    conns: HashMap<u64, Conn>,
    the_peer: Option<u64>,
    peer_done: bool,
    last_refusal: Option<String>,
}

impl LinkPolicy {
    pub fn new(id: LinkIdentity) -> Self {
        LinkPolicy {
            id,
            conns: HashMap::new(),
            the_peer: None,
            peer_done: false,
            last_refusal: None,
        }
    }

    /// Whether `conn` is the peer's connection.
    pub fn is_peer(&self, conn: u64) -> bool {
        self.the_peer == Some(conn)
    }

    /// The error when the link's deadline passes: silence from the peer, or no peer at all.
    pub fn on_timeout(&self, peer_timeout_secs: u64, connect_timeout_secs: u64) -> TransportError {
        let (stage, peer, address) = (self.id.rank, self.id.peer, self.id.endpoint.clone());
        if self.the_peer.is_some() {
            return TransportError::PeerLost {
                stage,
                peer,
                address,
                why: format!("no message or heartbeat for {peer_timeout_secs} s"),
            };
        }
        match &self.last_refusal {
            Some(why) => TransportError::Refused {
                stage,
                address,
                why: format!(
                    "no authenticated peer within {connect_timeout_secs} s; last refusal: {why}"
                ),
            },
            None => TransportError::NeverConnected {
                stage,
                peer,
                address,
                secs: connect_timeout_secs,
            },
        }
    }

    /// A connection's ZMTP handshake finished with the peer's READY `metadata`.
    pub fn on_ready(&mut self, conn: u64, metadata: &Metadata) -> Verdict {
        let id = &self.id;
        let Some((run, job, rank)) = meta::claimed(metadata) else {
            return self.refuse(format!(
                "a ZeroMQ peer without brigade's {}, {} and {} metadata",
                meta::RUN,
                meta::JOB,
                meta::RANK
            ));
        };
        if let Err(why) = check_identity(run, job, rank, id.run_id, id.job_hash, id.peer) {
            return match mismatch(why) {
                why if id.secret.is_some() || self.the_peer.is_some() => {
                    self.refuse(why.to_string())
                }
                // Without a secret, a brigade of another run or plan on this address is a
                // mis-wired job: say so now rather than at the timeout.
                Mismatch::Plan(why) => Verdict::Fail(TransportError::OtherPlan {
                    stage: id.rank,
                    address: id.endpoint.clone(),
                    why,
                }),
                Mismatch::Other(why) => Verdict::Fail(TransportError::Refused {
                    stage: id.rank,
                    address: id.endpoint.clone(),
                    why,
                }),
            };
        }
        if id.secret.is_some() {
            // Metadata proves nothing: the signed hello and the answer to our challenge do.
            return Verdict::Nothing;
        }
        if self.the_peer.is_some_and(|p| p != conn) {
            let why = format!("a second connection claims to be rank {}", id.peer);
            return self.refuse(why);
        }
        self.conns.entry(conn).or_default().hello = true;
        self.the_peer = Some(conn);
        Verdict::Peer
    }

    /// A connection's reader stopped with `e`.
    pub fn on_error(&mut self, conn: u64, e: ZmtpError) -> Verdict {
        if self.the_peer != Some(conn) {
            self.conns.remove(&conn);
            return match e {
                ZmtpError::Closed => Verdict::Nothing,
                e => self.refuse(e.to_string()),
            };
        }
        if self.peer_done {
            return Verdict::Done;
        }
        match e {
            e @ (ZmtpError::TooLarge { .. }
            | ZmtpError::FrameCount(_)
            | ZmtpError::Flags(_)
            | ZmtpError::Malformed { .. }) => Verdict::Fail(self.bad(e.to_string())),
            e => Verdict::Fail(TransportError::PeerLost {
                stage: self.id.rank,
                peer: self.id.peer,
                address: self.id.endpoint.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// A connection sent a message of `frames`.
    pub fn on_message(&mut self, conn: u64, mut frames: Vec<Frame>) -> Verdict {
        let is_peer = self.the_peer == Some(conn);
        let state = self.conns.entry(conn).or_default();
        if let Some(key) = &state.key {
            let tagged = frames.len() >= 2 && {
                let t = frames.last().expect("two frames or more");
                let body: Vec<&[u8]> = frames[..frames.len() - 1].iter().map(|f| &f[..]).collect();
                t.len() == auth::TAG_LEN && auth::tag(key, state.seq, &body)[..] == t[..]
            };
            if !tagged {
                return self.refuse(
                    "bad or missing message tag (not from the authenticated peer, or replayed)"
                        .into(),
                );
            }
            frames.pop();
            state.seq += 1;
        }
        match frames.len() {
            1 => self.on_control(conn, is_peer, &frames[0]),
            2 if is_peer => {
                let payload = frames.pop().expect("two frames");
                let header = frames.pop().expect("two frames");
                Verdict::Tensor(header, payload)
            }
            2 if self.id.secret.is_some() || self.the_peer.is_some() => {
                self.refuse("a tensor from a connection that has not authenticated".into())
            }
            2 => Verdict::Fail(self.bad("tensor before the hello handshake".into())),
            n if is_peer => Verdict::Fail(self.bad(format!("message of {n} frames"))),
            n => self.refuse(format!("message of {n} frames")),
        }
    }

    fn on_control(&mut self, conn: u64, is_peer: bool, frame: &[u8]) -> Verdict {
        let id = &self.id;
        let c = match Control::decode_checked(frame, id.run_id, id.job_hash, id.peer) {
            Ok(c) => c,
            Err(why) if id.secret.is_some() || self.the_peer.is_some() => {
                return self.refuse(why.to_string());
            }
            // Without a secret, a brigade of another run or plan on this address is a
            // mis-wired job: say so now rather than at the timeout.
            Err(Mismatch::Plan(why)) => {
                return Verdict::Fail(TransportError::OtherPlan {
                    stage: id.rank,
                    address: id.endpoint.clone(),
                    why,
                });
            }
            Err(Mismatch::Other(why)) => {
                return Verdict::Fail(TransportError::Refused {
                    stage: id.rank,
                    address: id.endpoint.clone(),
                    why,
                });
            }
        };
        let between = auth::Between {
            run_id: id.run_id,
            job_hash: id.job_hash,
            from: id.peer,
            to: id.rank,
        };
        match c.kind {
            ControlKind::Hello if self.the_peer.is_some() && !is_peer => {
                let why = format!("a second connection claims to be rank {}", id.peer);
                self.refuse(why)
            }
            ControlKind::Hello => match &id.secret {
                // Without a secret the peer was named by its READY metadata.
                None if is_peer => Verdict::Nothing,
                None => {
                    self.conns.entry(conn).or_default().hello = true;
                    self.the_peer = Some(conn);
                    Verdict::Peer
                }
                Some(secret) => match between.verify_hello(secret, &c.bytes.unwrap_or_default()) {
                    Some(challenge) => {
                        self.conns.entry(conn).or_default().hello = true;
                        Verdict::Challenge(challenge)
                    }
                    None => self.refuse(
                        "authentication failed: the peer's hello is not signed with this job's secret"
                            .into(),
                    ),
                },
            },
            ControlKind::Auth => {
                let Some(secret) = &id.secret else {
                    return Verdict::Nothing;
                };
                let answer = c.bytes.unwrap_or_default();
                let hello = self.conns.get(&conn).is_some_and(|s| s.hello);
                if self.the_peer.is_none()
                    && hello
                    && between.verify(secret, &id.own_challenge, &answer)
                {
                    let key = between.frame_key(secret, &id.own_challenge);
                    let state = self.conns.entry(conn).or_default();
                    state.key = Some(key);
                    state.seq = 0;
                    self.the_peer = Some(conn);
                    Verdict::Peer
                } else {
                    self.refuse(
                        "authentication failed: the peer does not have this job's secret".into(),
                    )
                }
            }
            ControlKind::Heartbeat => Verdict::Nothing,
            ControlKind::Bye if is_peer => {
                self.peer_done = true;
                Verdict::Done
            }
            ControlKind::Bye => Verdict::Nothing,
        }
    }

    fn refuse(&mut self, why: String) -> Verdict {
        self.last_refusal = Some(why.clone());
        Verdict::Refuse(why)
    }

    fn bad(&self, why: String) -> TransportError {
        TransportError::BadFrame {
            stage: self.id.rank,
            peer: self.id.peer,
            address: self.id.endpoint.clone(),
            why,
        }
    }
}

#[cfg(test)]
mod tests;
