//! The greeting every ZMTP 3.x connection opens with, 64 bytes each way:
//!
//! ```text
//! signature: %xFF, 8 bytes of padding, %x7F | major %x03 | minor %x01 |
//! mechanism: 20 bytes, ASCII, NUL-padded | as-server: %x00 / %x01 | filler: 31 x %x00
//! ```
//!
//! A ZMTP 1.0 peer opens with a length byte instead of %xFF (or clears bit 0 of byte 9); a
//! ZMTP 2.0 peer sends major version 1. Both are refused: their framing has no room for the
//! checks brigade needs, and a downgrade must not be a way around the mechanism.

use super::error::ZmtpError;

pub const LEN: usize = 64;
/// Bytes that identify ZMTP ≥ 2 before the version: checked first.
pub const SIGNATURE_LEN: usize = 10;
pub const MAJOR: u8 = 3;
pub const MINOR: u8 = 1;

/// Our greeting.
pub fn encode(mechanism: &str, as_server: bool) -> [u8; LEN] {
    let mut g = [0u8; LEN];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = MAJOR;
    g[11] = MINOR;
    let m = mechanism.as_bytes();
    g[12..12 + m.len().min(20)].copy_from_slice(&m[..m.len().min(20)]);
    g[32] = u8::from(as_server);
    g
}

/// Checks the first ten bytes: a ZMTP 1.0 peer or a stranger fails here.
pub fn check_signature(s: &[u8; SIGNATURE_LEN]) -> Result<(), ZmtpError> {
    if s[0] == 0xFF && s[9] & 0x01 == 0x01 {
        Ok(())
    } else {
        Err(ZmtpError::NotZmtp(*s))
    }
}

/// What the rest of a peer's greeting says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGreeting {
    pub major: u8,
    pub minor: u8,
    pub mechanism: String,
    pub as_server: bool,
}

/// Reads bytes 10.. of a greeting (the major version alone first: an old peer sends no more).
pub fn check_major(major: u8) -> Result<(), ZmtpError> {
    if major >= MAJOR {
        Ok(())
    } else {
        Err(ZmtpError::OldVersion(major))
    }
}

/// Parses the whole greeting (after [`check_signature`] and [`check_major`]).
pub fn parse(g: &[u8; LEN]) -> Result<PeerGreeting, ZmtpError> {
    let raw = &g[12..32];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if raw[end..].iter().any(|&b| b != 0) || !raw[..end].iter().all(|b| b.is_ascii_graphic()) {
        return Err(ZmtpError::Malformed {
            what: "greeting",
            why: format!("mechanism field {raw:02x?}"),
        });
    }
    Ok(PeerGreeting {
        major: g[10],
        minor: g[11],
        mechanism: String::from_utf8_lossy(&raw[..end]).into_owned(),
        as_server: g[32] == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_greeting_is_64_bytes_of_zmtp_3_1_null() {
        let g = encode("NULL", false);
        assert_eq!(g.len(), 64);
        assert_eq!(&g[..12], &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 1]);
        assert_eq!(&g[12..17], b"NULL\0");
        assert!(g[32..].iter().all(|&b| b == 0));
        let p = parse(&g).unwrap();
        assert_eq!((p.major, p.minor, p.mechanism.as_str()), (3, 1, "NULL"));
        assert!(parse(&encode("CURVE", true)).unwrap().as_server);
    }

    #[test]
    fn signatures_and_versions() {
        // (first ten bytes, accepted?)
        let table: [([u8; 10], bool); 5] = [
            ([0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F], true),
            // libzmq pads with the identity length + 1.
            ([0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F], true),
            // ZMTP 1.0: a length byte and a flags byte.
            ([0x01, 0x00, b'x', 0, 0, 0, 0, 0, 0, 0], false),
            ([0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7E], false),
            (*b"GET / HTTP", false),
        ];
        for (sig, ok) in table {
            assert_eq!(check_signature(&sig).is_ok(), ok, "{sig:02x?}");
        }
        assert!(check_major(3).is_ok());
        assert!(check_major(4).is_ok());
        assert!(matches!(check_major(1), Err(ZmtpError::OldVersion(1))));
    }

    #[test]
    fn malformed_mechanisms_are_refused() {
        let mut g = encode("NULL", false);
        g[20] = b'X'; // a byte after the NUL padding
        assert!(parse(&g).is_err());
        let mut g = encode("NULL", false);
        g[13] = 0x07;
        assert!(parse(&g).is_err());
    }
}
