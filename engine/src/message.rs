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

/// A buffer to sum with the other members of `ring` (this rank is member `me`): a bucket of a
/// chunk's gradients (`edge` the chunk, `bucket` its number) or the norm's or the tie's ring
/// (bucket 0). The transport runs the reduction where its bytes arrive — the network
/// transport on its I/O thread — and hands back a [`Reduced`].
#[derive(Debug)]
pub struct ReduceJob {
    pub edge: u32,
    pub bucket: u32,
    pub step: u64,
    pub ring: Vec<usize>,
    pub me: usize,
    pub algo: crate::allreduce::Algo,
    pub data: Vec<f32>,
}

/// A finished reduction: the sum of every member's buffer, the same bits on each.
#[derive(Debug, PartialEq)]
pub struct Reduced {
    pub edge: u32,
    pub bucket: u32,
    pub step: u64,
    /// The sum's segments in order (without its padding).
    pub sum: crate::allreduce::Sum,
}

/// What a transport hands the compute thread.
#[derive(Debug)]
pub enum Arrived {
    /// A tensor a neighbour sent.
    Message(Box<Incoming>),
    /// A reduction this rank started is finished.
    Reduced(Reduced),
}
