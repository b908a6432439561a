//! An in-process transport over crossbeam channels, for tests and single-process runs: each
//! rank runs on its own thread and tensors move without serialisation. Reductions advance
//! on the rank's thread whenever it asks for what arrived.

use super::reducer::{Out, Reducer, Segment};
use super::{Transport, TransportError, bad_segment};
use crate::message::{Arrived, Incoming, Outgoing, ReduceJob, Reduced};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What crosses between two ranks' threads.
enum Item {
    Message(Incoming),
    /// A ring segment (its `peer`: the sender).
    Segment(Segment),
}

pub struct MemoryTransport {
    rank: usize,
    inbox: Receiver<Item>,
    /// Every rank's inbox, by rank (empty after `finish`).
    peers: Vec<Sender<Item>>,
    reducer: Reducer,
    /// Finished reductions not yet handed over.
    done: VecDeque<Reduced>,
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
            reducer: Reducer::default(),
            done: VecDeque::new(),
        })
        .collect()
}

impl MemoryTransport {
    fn put(&self, to: usize, item: Item) -> Result<(), TransportError> {
        let lost = |why: &str| TransportError::PeerLost {
            stage: self.rank,
            peer: to,
            address: "memory".into(),
            why: why.into(),
        };
        let tx = self
            .peers
            .get(to)
            .filter(|_| to != self.rank)
            .ok_or_else(|| lost("no such rank"))?;
        tx.send(item).map_err(|_| lost("its thread has ended"))
    }

    /// Sends what the reducer asks and keeps its finished sums.
    fn carry(&mut self, outs: Vec<Out>) -> Result<(), TransportError> {
        for out in outs {
            match out {
                Out::Send(seg) => {
                    let to = seg.peer;
                    let seg = Segment {
                        peer: self.rank,
                        ..seg
                    };
                    self.put(to, Item::Segment(seg))?;
                }
                Out::Done(r) => self.done.push_back(r),
            }
        }
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError> {
        let item = Item::Message(Incoming {
            edge: msg.edge,
            kind: msg.kind,
            step: msg.step,
            microbatch: msg.microbatch,
            tensor: msg.tensor,
        });
        self.put(msg.to, item)
    }

    fn reduce(&mut self, job: ReduceJob) -> Result<(), TransportError> {
        let outs = self
            .reducer
            .start(job)
            .map_err(|e| bad_segment(self.rank, e))?;
        self.carry(outs)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Arrived>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.done.pop_front() {
                return Ok(Some(Arrived::Reduced(r)));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(Item::Message(m)) => return Ok(Some(Arrived::Message(m))),
                Ok(Item::Segment(seg)) => {
                    let outs = self
                        .reducer
                        .arrived(seg)
                        .map_err(|e| bad_segment(self.rank, e))?;
                    self.carry(outs)?;
                }
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                // A non-blocking look finds nothing; only a wait for a message that can no
                // longer come is an error.
                Err(RecvTimeoutError::Disconnected) if timeout.is_zero() => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TransportError::Io {
                        stage: self.rank,
                        why: "every other rank has ended".into(),
                    });
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        self.peers.clear();
        Ok(())
    }
}
