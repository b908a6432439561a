//! ZMTP frame heads: a flags byte (MORE, LONG, COMMAND; the other bits reserved, zero) and the
//! body's size, one byte, or eight in network order when LONG is set.

use super::error::ZmtpError;

pub const MORE: u8 = 0x01;
pub const LONG: u8 = 0x02;
pub const COMMAND: u8 = 0x04;

/// A frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// More frames of the same message follow.
    pub more: bool,
    pub command: bool,
    pub len: u64,
}

/// How many size bytes follow `flags`.
pub fn size_len(flags: u8) -> Result<usize, ZmtpError> {
    if flags & !(MORE | LONG | COMMAND) != 0 {
        return Err(ZmtpError::Flags(flags));
    }
    if flags & COMMAND != 0 && flags & MORE != 0 {
        return Err(ZmtpError::Malformed {
            what: "frame",
            why: "a command frame with MORE set".into(),
        });
    }
    Ok(if flags & LONG != 0 { 8 } else { 1 })
}

/// The head from its flags and size bytes, refused before anything is allocated if the body
/// would exceed `limit`.
pub fn decode(flags: u8, size: &[u8], limit: u64) -> Result<Head, ZmtpError> {
    let len = match size.len() {
        1 => size[0] as u64,
        8 => u64::from_be_bytes(size.try_into().expect("8 bytes")),
        n => {
            return Err(ZmtpError::Malformed {
                what: "frame",
                why: format!("{n} size bytes"),
            });
        }
    };
    if len > limit {
        return Err(ZmtpError::TooLarge { len, limit });
    }
    Ok(Head {
        more: flags & MORE != 0,
        command: flags & COMMAND != 0,
        len,
    })
}

/// The head's bytes (`buf[..n]`).
pub fn encode(more: bool, command: bool, len: usize) -> ([u8; 9], usize) {
    let mut buf = [0u8; 9];
    let mut flags = 0;
    if more {
        flags |= MORE;
    }
    if command {
        flags |= COMMAND;
    }
    if len > 255 {
        buf[0] = flags | LONG;
        buf[1..9].copy_from_slice(&(len as u64).to_be_bytes());
        (buf, 9)
    } else {
        buf[0] = flags;
        buf[1] = len as u8;
        (buf, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        // (more, command, len, encoded)
        let table: [(bool, bool, usize, &[u8]); 5] = [
            (false, false, 0, &[0x00, 0]),
            (true, false, 5, &[0x01, 5]),
            (false, true, 255, &[0x04, 255]),
            (false, false, 256, &[0x02, 0, 0, 0, 0, 0, 0, 1, 0]),
            (true, false, 1 << 32, &[0x03, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (more, command, len, bytes) in table {
            let (buf, n) = encode(more, command, len);
            assert_eq!(&buf[..n], bytes, "{more} {command} {len}");
            let flags = bytes[0];
            assert_eq!(size_len(flags).unwrap(), n - 1);
            let head = decode(flags, &bytes[1..], u64::MAX).unwrap();
            assert_eq!(
                head,
                Head {
                    more,
                    command,
                    len: len as u64
                }
            );
        }
    }

    #[test]
    fn limits_and_reserved_bits() {
        let huge = (1u64 << 40).to_be_bytes();
        assert!(matches!(
            decode(LONG, &huge, 1 << 20),
            Err(ZmtpError::TooLarge { len, limit }) if len == 1 << 40 && limit == 1 << 20
        ));
        assert!(matches!(size_len(0x08), Err(ZmtpError::Flags(0x08))));
        assert!(matches!(size_len(0x80), Err(ZmtpError::Flags(0x80))));
        assert!(size_len(COMMAND | MORE).is_err());
    }
}
