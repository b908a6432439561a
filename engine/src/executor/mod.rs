//! Running one stage: the sans-I/O [`core::Executor`] and the [`driver`] that connects it to a
//! transport.

pub mod build;
pub mod core;
pub mod driver;
