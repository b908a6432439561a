//! How tensors get between stages. The executor core does not know; a driver moves messages
//! between it and a [`Transport`]: TCP or Unix sockets between processes, channels in tests.

mod inline;
pub mod memory;
pub mod net;
pub mod reducer;

use crate::message::{Arrived, Outgoing, ReduceJob};
use std::time::Duration;

/// How a link fails; defined in the wire crate, where links fail.
pub use brigade_wire::TransportError;

/// Moves tensors between this stage and its neighbours.
pub trait Transport {
    /// Queues a tensor for sending; never waits for the network.
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError>;
    /// Starts summing `job`'s buffer with its ring's other members; the sum comes back
    /// through [`Transport::recv`]. Never waits for the network.
    fn reduce(&mut self, job: ReduceJob) -> Result<(), TransportError>;
    /// The next received tensor or finished reduction, waiting at most `timeout` (`Ok(None)`
    /// when none came).
    fn recv(&mut self, timeout: Duration) -> Result<Option<Arrived>, TransportError>;
    /// Delivers everything queued and tells the neighbours this stage is done.
    fn finish(&mut self) -> Result<(), TransportError>;
}

/// A peer's all-reduce segment this rank cannot take, as the link error naming that peer.
pub(crate) fn bad_segment(stage: usize, e: reducer::SegmentError) -> TransportError {
    TransportError::BadFrame {
        stage,
        peer: e.peer,
        address: "its all-reduce link".into(),
        why: e.to_string(),
    }
}
