//! An in-process transport over crossbeam channels, for tests and single-process runs: each
//! rank runs on its own thread and tensors move without serialisation. Reductions advance
//! on the rank's thread whenever it asks for what arrived.

use super::inline::{Delivery as Item, InlineReducer};
use super::reducer::Segment;
use super::{Transport, TransportError};
use crate::message::{Arrived, Incoming, Outgoing, ReduceJob};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::time::Duration;

pub struct MemoryTransport {
    rank: usize,
    inbox: Receiver<Item>,
    /// Every rank's inbox, by rank (empty after `finish`).
    peers: Vec<Sender<Item>>,
    reducer: InlineReducer,
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
            reducer: InlineReducer::new(rank, false),
        })
        .collect()
}

fn put(rank: usize, peers: &[Sender<Item>], to: usize, item: Item) -> Result<(), TransportError> {
    let lost = |why: &str| TransportError::PeerLost {
        stage: rank,
        peer: to,
        address: "memory".into(),
        why: why.into(),
    };
    let tx = peers
        .get(to)
        .filter(|_| to != rank)
        .ok_or_else(|| lost("no such rank"))?;
    tx.send(item).map_err(|_| lost("its thread has ended"))
}

/// How the reducer's segments leave rank `rank` (naming it as their sender).
fn segment_to(
    rank: usize,
    peers: &[Sender<Item>],
) -> impl FnMut(Segment) -> Result<(), TransportError> {
    move |seg: Segment| {
        let to = seg.peer;
        put(
            rank,
            peers,
            to,
            Item::Segment(Segment { peer: rank, ..seg }),
        )
    }
}

impl Transport for MemoryTransport {
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError> {
        let item = Item::Message(Box::new(Incoming {
            edge: msg.edge,
            kind: msg.kind,
            step: msg.step,
            microbatch: msg.microbatch,
            tensor: msg.tensor,
        }));
        put(self.rank, &self.peers, msg.to, item)
    }

    fn reduce(&mut self, job: ReduceJob) -> Result<(), TransportError> {
        let send = segment_to(self.rank, &self.peers);
        self.reducer.start(job, send)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Arrived>, TransportError> {
        let (rank, inbox) = (self.rank, &self.inbox);
        let next = |wait: Duration| match inbox.recv_timeout(wait) {
            Ok(item) => Ok(Some(item)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // A non-blocking look finds nothing; only a wait for a message that can no
            // longer come is an error.
            Err(RecvTimeoutError::Disconnected) if wait.is_zero() => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Io {
                stage: rank,
                why: "every other rank has ended".into(),
            }),
        };
        let send = segment_to(rank, &self.peers);
        self.reducer.recv(timeout, next, send)
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        self.peers.clear();
        Ok(())
    }
}
