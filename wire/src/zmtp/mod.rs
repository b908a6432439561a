//! ZeroMQ's wire protocol, ZMTP 3.1 (RFC 23/ZMTP and 37/ZMTP), from brigade's own code: the
//! 64-byte greeting, the NULL mechanism's READY handshake with metadata, frames with MORE,
//! LONG and COMMAND flags, and the PING/PONG/ERROR commands. Any ZeroMQ PUSH or PULL socket
//! (libzmq through pyzmq, the `zeromq` crate) can talk to a brigade link.
//!
//! The parsing is pure ([`greeting`], [`frame`], [`command`]) and tested with tables; [`io`]
//! only moves bytes. What brigade's framing did better than the libraries stays: every
//! declared length — in the handshake and after it — is checked against a limit before
//! anything is allocated, and data frames are read straight into aligned storage that becomes a
//! tensor.

pub mod boxes;
pub mod command;
pub mod curve;
mod error;
pub mod frame;
pub mod greeting;
pub mod io;

pub use command::{Command, Metadata, SocketType};
pub use error::ZmtpError;
pub use io::Mechanism;
