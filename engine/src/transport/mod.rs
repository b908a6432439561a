//! How tensors get between stages. The executor core does not know; a driver moves messages
//! between it and a [`Transport`]: TCP or Unix sockets between processes, channels in tests.

pub mod memory;
pub mod net;

use crate::message::{Incoming, Outgoing};
use std::time::Duration;

/// How a link fails; defined in the wire crate, where links fail.
pub use brigade_wire::TransportError;

/// Moves tensors between this stage and its neighbours.
pub trait Transport {
    /// Queues a tensor for sending; never waits for the network.
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError>;
    /// The next received tensor, waiting at most `timeout` (`Ok(None)` when none came).
    fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming>, TransportError>;
    /// Delivers everything queued and tells the neighbours this stage is done.
    fn finish(&mut self) -> Result<(), TransportError>;
}
