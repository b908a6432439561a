//! How a link fails: every variant names the rank (`stage`) and the peer or address concerned,
//! so that a failed job says which neighbour to look at.

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
