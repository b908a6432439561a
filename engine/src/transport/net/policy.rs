//! The receive path's per-connection policy, as a pure state machine: what a link's listener
//! does with each handshake, message or read error from each connection — peer or stranger,
//! limits, mis-wired jobs. No sockets, no clock: the pull task feeds it events and carries out
//! the [`Verdict`]s, and the tests beside it drive it with tables.
//!
//! The rules: a connection first completes the ZMTP handshake — under a job secret, CURVE with
//! the job's keys on `tcp://` (anyone else fails there and never reaches this policy's
//! [`LinkPolicy::on_ready`]). The first connection whose READY metadata names this run, this
//! job and the expected rank becomes *the peer*. Whatever other connections send is refused
//! (logged with their address) and never ends the job. The peer's own faults are fatal: it
//! passed the handshake, so a bad frame from it means a broken or mismatched brigade. A
//! connection that names another run or plan before there is a peer is a mis-wired job and
//! fails at once rather than at the connect timeout.

use super::control::{Control, ControlKind, Mismatch, check_identity, mismatch};
use super::meta;
use super::wire::Frame;
use super::zmtp::{Metadata, ZmtpError};
use crate::transport::TransportError;

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
}

/// What the pull task must do with one event.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Nothing (a stranger's clean close, a bye from a stranger, an unknown control message).
    Nothing,
    /// Log this refusal of a stranger's message and carry on.
    Refuse(String),
    /// This connection is now the peer: stop accepting connections, start the peer timeout.
    Peer,
    /// A tensor message from the peer (header, payload).
    Tensor(Frame, Frame),
    /// The peer said bye, or closed the connection after it: the link is done.
    Done,
    /// The link failed.
    Fail(TransportError),
}

/// The policy of one link (one edge, one direction).
#[derive(Debug)]
pub(super) struct LinkPolicy {
    id: LinkIdentity,
    the_peer: Option<u64>,
    peer_done: bool,
    last_refusal: Option<String>,
}

impl LinkPolicy {
    pub fn new(id: LinkIdentity) -> Self {
        LinkPolicy {
            id,
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

    /// A connection finished the ZMTP handshake with the peer's READY `metadata`.
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
                why if self.the_peer.is_some() => self.refuse(why.to_string()),
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
        if self.the_peer.is_some() {
            let why = format!("a second connection claims to be rank {}", id.peer);
            return self.refuse(why);
        }
        self.the_peer = Some(conn);
        Verdict::Peer
    }

    /// A connection's reader stopped with `e`.
    pub fn on_error(&mut self, conn: u64, e: ZmtpError) -> Verdict {
        if self.the_peer != Some(conn) {
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
        match frames.len() {
            2 if is_peer => {
                let payload = frames.pop().expect("two frames");
                let header = frames.pop().expect("two frames");
                Verdict::Tensor(header, payload)
            }
            1 if is_peer => {
                let id = &self.id;
                match Control::decode_checked(&frames[0], id.run_id, id.job_hash, id.peer) {
                    Ok(c) if c.kind == ControlKind::Bye => {
                        self.peer_done = true;
                        Verdict::Done
                    }
                    Ok(_) => Verdict::Nothing,
                    Err(why) => Verdict::Fail(self.bad(why.to_string())),
                }
            }
            n if is_peer => Verdict::Fail(self.bad(format!("message of {n} frames"))),
            2 => self.refuse("a tensor from a connection that is not the peer".into()),
            n => self.refuse(format!(
                "a message of {n} frames from a connection that is not the peer"
            )),
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
