//! An in-process transport over crossbeam channels, for tests and single-process runs: each
//! stage runs on its own thread and tensors move without serialisation.

use super::{Transport, TransportError};
use crate::executor::core::{Incoming, Outgoing, Peer};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::time::Duration;

pub struct MemoryTransport {
    stage: usize,
    inbox: Receiver<Incoming>,
    prev: Option<Sender<Incoming>>,
    next: Option<Sender<Incoming>>,
}

/// Transports for a chain of `stages` stages, in stage order.
pub fn chain(stages: usize) -> Vec<MemoryTransport> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..stages).map(|_| unbounded()).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(k, inbox)| MemoryTransport {
            stage: k,
            inbox,
            prev: (k > 0).then(|| txs[k - 1].clone()),
            next: (k + 1 < stages).then(|| txs[k + 1].clone()),
        })
        .collect()
}

impl Transport for MemoryTransport {
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError> {
        let (tx, peer) = match msg.to {
            Peer::Prev => (self.prev.as_ref(), self.stage.wrapping_sub(1)),
            Peer::Next => (self.next.as_ref(), self.stage + 1),
        };
        let lost = |why: &str| TransportError::PeerLost {
            stage: self.stage,
            peer,
            address: "memory".into(),
            why: why.into(),
        };
        tx.ok_or_else(|| lost("no such neighbour"))?
            .send(Incoming {
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
                stage: self.stage,
                why: "every neighbour has ended".into(),
            }),
        }
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        self.prev = None;
        self.next = None;
        Ok(())
    }
}
