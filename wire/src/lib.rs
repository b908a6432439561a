//! brigade's wire: how bytes get between two ranks, without knowing they are tensors.
//!
//! - [`zmtp`]: ZeroMQ's wire protocol, ZMTP 3.1, with the NULL and CURVE mechanisms (decision
//!   0007), so any ZeroMQ PUSH or PULL socket can talk to a brigade link;
//! - [`aligned`]: received data frames read straight into aligned storage, which the engine
//!   hands to burn as a tensor's bytes without a copy;
//! - [`socket`]: `tcp://` and `ipc://` endpoints;
//! - [`secret`]: the job secret and the CURVE keys derived from it;
//! - [`meta`], [`control`], [`policy`]: who a connection's peer says it is, the bye that closes
//!   a link, and the listener's pure state machine deciding what to do with each connection's
//!   events;
//! - [`TransportError`]: how a link fails, naming the rank and peer.
//!
//! No burn and no engine types: it builds and tests in seconds (decision 0015). The engine's
//! transport (`brigade_engine::transport::net`) runs these on its I/O thread and turns frames
//! into tensors.

pub mod aligned;
pub mod control;
mod error;
pub mod meta;
pub mod policy;
pub mod secret;
pub mod socket;
pub mod zmtp;

pub use aligned::Frame;
pub use error::TransportError;
