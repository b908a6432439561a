//! Running one rank: the sans-I/O [`core::Executor`], the [`driver`] that connects it to a
//! transport, and the [`writer`] that writes its checkpoints off the compute thread.

pub mod build;
pub mod core;
pub mod driver;
pub mod error;
mod reductions;
pub mod writer;
