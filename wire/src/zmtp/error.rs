//! How a ZMTP connection fails (the parsers', the handshakes' and the reads' one error type).

/// Why a ZMTP peer was refused or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// The stream ended cleanly between messages.
    #[error("the connection was closed")]
    Closed,
    #[error("the connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a ZeroMQ peer, or one speaking ZMTP 1.0 (it opened with {0:02x?})")]
    NotZmtp([u8; 10]),
    #[error(
        "the peer speaks an older ZMTP (version byte {0}; 1 is ZMTP 2.0); brigade speaks ZMTP 3.1 and refuses older versions"
    )]
    OldVersion(u8),
    #[error("the peer asks for the {0:?} security mechanism; this link uses {1}")]
    Mechanism(String, &'static str),
    #[error("a frame of {len} bytes exceeds this link's limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("a frame with reserved flag bits set ({0:#04x})")]
    Flags(u8),
    #[error("a message of more than {0} frames")]
    FrameCount(usize),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("the peer is a ZeroMQ {peer} socket; a brigade {ours} link talks only to {wants}")]
    SocketType {
        peer: String,
        ours: &'static str,
        wants: &'static str,
    },
    #[error("the peer sent ERROR: {0}")]
    PeerError(String),
    #[error("authentication failed (CURVE): {0}; the peer does not have this job's secret")]
    Auth(String),
    #[error("unexpected {0} command")]
    Unexpected(String),
}
