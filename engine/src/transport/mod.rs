//! How tensors get between stages. The executor core does not know; a driver moves messages
//! between it and a [`Transport`]: TCP or Unix sockets between processes, channels in tests.

pub mod memory;
pub mod net;

use crate::message::{Incoming, Outgoing};
use std::time::Duration;

/// A transport failure; every variant names the rank (`stage`) and peer concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("stage {stage}: lost peer stage {peer} ({address}): {why}")]
    PeerLost {
        stage: usize,
        peer: usize,
        address: String,
        why: String,
    },
    #[error("stage {stage}: refused a connection on {address}: {why}")]
    OtherPlan {
        stage: usize,
        address: String,
        why: String,
    },
    #[error("stage {stage}: refused a connection on {address}: {why}")]
    Refused {
        stage: usize,
        address: String,
        why: String,
    },
    #[error("stage {stage}: bad frame from stage {peer} ({address}): {why}")]
    BadFrame {
        stage: usize,
        peer: usize,
        address: String,
        why: String,
    },
    #[error(
        "stage {stage}: cannot reach stage {peer} at {address} within {secs} s: {why}. Check that it was started, with the same topology, and that the address is reachable"
    )]
    Unreachable {
        stage: usize,
        peer: usize,
        address: String,
        secs: u64,
        why: String,
    },
    #[error(
        "stage {stage}: stage {peer} did not connect to {address} (where this stage listens) within {secs} s. Check that it was started (its host's `brigade launch`), with the same topology and run id, and that it can reach this address"
    )]
    NeverConnected {
        stage: usize,
        peer: usize,
        address: String,
        secs: u64,
    },
    #[error("stage {stage}: cannot listen on {address}: {why}")]
    Bind {
        stage: usize,
        address: String,
        why: String,
    },
    #[error("stage {stage}: the I/O thread stopped: {why}")]
    Io { stage: usize, why: String },
}

/// Moves tensors between this stage and its neighbours.
pub trait Transport {
    /// Queues a tensor for sending; never waits for the network.
    fn send(&mut self, msg: Outgoing) -> Result<(), TransportError>;
    /// The next received tensor, waiting at most `timeout` (`Ok(None)` when none came).
    fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming>, TransportError>;
    /// Delivers everything queued and tells the neighbours this stage is done.
    fn finish(&mut self) -> Result<(), TransportError>;
}
