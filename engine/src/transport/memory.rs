//! An in-process transport over crossbeam channels, for tests and single-process runs: each
//! rank runs on its own thread and tensors move without serialisation.

use super::{Transport, TransportError};
use crate::message::{Incoming, Outgoing};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::time::Duration;

pub struct MemoryTransport {
    rank: usize,
    inbox: Receiver<Incoming>,
    /// Every rank's inbox, by rank (empty after `finish`).
    peers: Vec<Sender<Incoming>>,
}

/// Transports for `ranks` ranks that can all reach each other, in rank order.
pub fn mesh(ranks: usize) -> Vec<MemoryTransport> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..ranks).map(|_| unbounded()).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(rank, inbox)| MemoryTransport {
            rank,
            inbox,
            // A rank never sends to itself; its own slot holds a sender to nowhere, so that its
            // inbox disconnects once every other rank has ended.
            peers: txs
                .iter()
                .enumerate()
                .map(|(r, tx)| if r == rank { unbounded().0 } else { tx.clone() })
                .collect(),
        })
        .collect()
}

impl Transport for MemoryTransport {
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError> {
        let lost = |why: &str| TransportError::PeerLost {
            stage: self.rank,
            peer: msg.to,
            address: "memory".into(),
            why: why.into(),
        };
        let tx = self
            .peers
            .get(msg.to)
            .filter(|_| msg.to != self.rank)
            .ok_or_else(|| lost("no such rank"))?;
        tx.send(Incoming {
            edge: msg.edge,
            kind: msg.kind,
            step: msg.step,
            microbatch: msg.microbatch,
            tensor: msg.tensor,
        })
        .map_err(|_| lost("its thread has ended"))
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming>, TransportError> {
        match self.inbox.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // A non-blocking look finds nothing; only a wait for a message that can no longer
            // come is an error.
            Err(RecvTimeoutError::Disconnected) if timeout.is_zero() => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Io {
                stage: self.rank,
                why: "every other rank has ended".into(),
            }),
        }
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        self.peers.clear();
        Ok(())
    }
}
