//! The receive path's per-connection policy, as a pure state machine: what a rank's listener
//! does with each handshake, message or read error from each connection — which peer it is,
//! strangers, limits, mis-wired jobs. No sockets, no clock: the pull task feeds it events and
//! carries out the [`Verdict`]s, and the tests beside it drive it with tables.
//!
//! A rank listens on one socket for every rank that sends to it. A connection first completes
//! the ZMTP handshake — under a job secret, CURVE with the job's keys on `tcp://` (anyone else
//! fails there and never reaches [`LinkPolicy::on_ready`]). A connection whose READY metadata
//! names this run, this job and one of the expected sender ranks becomes that rank's peer
//! connection (one per rank). Whatever other connections send is refused (logged with their
//! address) and never ends the job. A peer's own faults are fatal: it passed the handshake, so
//! a bad frame from it means a broken or mismatched brigade. A connection that names another
//! run or plan before any peer has connected is a mis-wired job and fails at once rather than
//! at the connect timeout.

use crate::aligned::Frame;
use crate::control::{Control, ControlKind, Mismatch, check_identity, mismatch};
use crate::error::TransportError;
use crate::meta;
use crate::zmtp::{Metadata, ZmtpError};
use std::collections::{BTreeSet, HashMap};

/// What the listener is and whom it expects.
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    /// This rank.
    pub rank: usize,
    /// The ranks allowed to send to it.
    pub peers: Vec<usize>,
    /// Where this rank listens (for messages).
    pub endpoint: String,
    pub run_id: u64,
    pub job_hash: u64,
}

/// What the pull task must do with one event.
#[derive(Debug)]
pub enum Verdict {
    /// Nothing (a stranger's clean close, an unknown control message).
    Nothing,
    /// Log this refusal of a stranger's message and carry on.
    Refuse(String),
    /// This connection is now rank `0`'s.
    Peer(usize),
    /// A tensor message (header, payload) from a peer rank.
    Tensor(usize, Frame, Frame),
    /// A peer rank said bye (or closed its connection after it).
    Done(usize),
    /// The link failed.
    Fail(TransportError),
}

/// The policy of one rank's listener.
#[derive(Debug)]
pub struct LinkPolicy {
    id: LinkIdentity,
    /// connection → peer rank.
    conns: HashMap<u64, usize>,
    /// peer ranks that have a connection.
    connected: BTreeSet<usize>,
    done: BTreeSet<usize>,
    last_refusal: Option<String>,
}

impl LinkPolicy {
    pub fn new(id: LinkIdentity) -> Self {
        LinkPolicy {
            id,
            conns: HashMap::new(),
            connected: BTreeSet::new(),
            done: BTreeSet::new(),
            last_refusal: None,
        }
    }

    /// The peer rank `conn` belongs to, if it is a peer's connection.
    pub fn peer_of(&self, conn: u64) -> Option<usize> {
        self.conns.get(&conn).copied()
    }

    /// Every expected rank has connected.
    pub fn all_connected(&self) -> bool {
        self.connected.len() == self.id.peers.len()
    }

    /// Every expected rank has said bye.
    pub fn all_done(&self) -> bool {
        self.done.len() == self.id.peers.len()
    }

    /// Whether rank `peer` said bye.
    pub fn is_done(&self, peer: usize) -> bool {
        self.done.contains(&peer)
    }

    /// Rank `peer` sent nothing (not even a heartbeat) for `secs` seconds.
    pub fn silent(&self, peer: usize, secs: u64) -> TransportError {
        TransportError::PeerLost {
            stage: self.id.rank,
            peer,
            address: self.id.endpoint.clone(),
            why: format!("no message or heartbeat for {secs} s"),
        }
    }

    /// The connect timeout passed with ranks missing.
    pub fn missing(&self, connect_timeout_secs: u64) -> TransportError {
        let (stage, address) = (self.id.rank, self.id.endpoint.clone());
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
                peer: self
                    .id
                    .peers
                    .iter()
                    .copied()
                    .find(|p| !self.connected.contains(p))
                    .unwrap_or(self.id.peers[0]),
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
        let expected = if id.peers.contains(&rank) {
            rank
        } else {
            id.peers[0]
        };
        let who = check_identity(run, job, rank, id.run_id, id.job_hash, expected).map_err(|why| {
            if id.peers.len() > 1 && !id.peers.contains(&rank) {
                format!(
                    "peer says it is rank {rank}, but rank {} hears from ranks {:?} (mis-wired endpoints)",
                    id.rank, id.peers
                )
            } else {
                why
            }
        });
        if let Err(why) = who {
            return match mismatch(why) {
                why if !self.connected.is_empty() => self.refuse(why.to_string()),
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
        if !self.connected.insert(rank) {
            return self.refuse(format!("a second connection claims to be rank {rank}"));
        }
        self.conns.insert(conn, rank);
        Verdict::Peer(rank)
    }

    /// A connection's reader stopped with `e`.
    pub fn on_error(&mut self, conn: u64, e: ZmtpError) -> Verdict {
        let Some(peer) = self.peer_of(conn) else {
            return match e {
                ZmtpError::Closed => Verdict::Nothing,
                e => self.refuse(e.to_string()),
            };
        };
        if self.done.contains(&peer) {
            return Verdict::Nothing;
        }
        match e {
            e @ (ZmtpError::TooLarge { .. }
            | ZmtpError::FrameCount(_)
            | ZmtpError::Flags(_)
            | ZmtpError::Malformed { .. }) => Verdict::Fail(self.bad(peer, e.to_string())),
            e => Verdict::Fail(TransportError::PeerLost {
                stage: self.id.rank,
                peer,
                address: self.id.endpoint.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// A connection sent a message of `frames`.
    pub fn on_message(&mut self, conn: u64, mut frames: Vec<Frame>) -> Verdict {
        let Some(peer) = self.peer_of(conn) else {
            return match frames.len() {
                2 => self.refuse("a tensor from a connection that is not a peer".into()),
                n => self.refuse(format!(
                    "a message of {n} frames from a connection that is not a peer"
                )),
            };
        };
        match frames.len() {
            2 => {
                let payload = frames.pop().expect("two frames");
                let header = frames.pop().expect("two frames");
                Verdict::Tensor(peer, header, payload)
            }
            1 => {
                let id = &self.id;
                match Control::decode_checked(&frames[0], id.run_id, id.job_hash, peer) {
                    Ok(c) if c.kind == ControlKind::Bye => {
                        self.done.insert(peer);
                        Verdict::Done(peer)
                    }
                    Ok(_) => Verdict::Nothing,
                    Err(why) => Verdict::Fail(self.bad(peer, why.to_string())),
                }
            }
            n => Verdict::Fail(self.bad(peer, format!("message of {n} frames"))),
        }
    }

    fn refuse(&mut self, why: String) -> Verdict {
        self.last_refusal = Some(why.clone());
        Verdict::Refuse(why)
    }

    /// A bad frame from rank `peer`.
    pub fn bad(&self, peer: usize, why: String) -> TransportError {
        TransportError::BadFrame {
            stage: self.id.rank,
            peer,
            address: self.id.endpoint.clone(),
            why,
        }
    }
}

#[cfg(test)]
mod tests;
