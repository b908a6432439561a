//! The tensors that cross between ranks, as the executor emits and consumes them and the
//! transports carry them. Its own module so that the executor and the transports both depend
//! on it and not on each other (only the driver joins the two).

use brigade_stages::Act;
use brigade_stages::codec::Kind;

/// A tensor received on an edge (already decoded and checked against the plan's shape).
#[derive(Debug)]
pub struct Incoming {
    pub edge: u32,
    pub kind: Kind,
    pub step: u64,
    pub microbatch: u64,
    pub tensor: Act,
}

/// A tensor to send along an edge to rank `to`.
#[derive(Debug)]
pub struct Outgoing {
    pub edge: u32,
    pub to: usize,
    pub kind: Kind,
    pub step: u64,
    pub microbatch: u64,
    pub tensor: Act,
}
