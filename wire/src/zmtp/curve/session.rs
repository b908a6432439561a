//! The boxes of an established CURVE connection: every frame travels as a MESSAGE command
//! whose box holds a flags byte (MORE, COMMAND) and the frame, sealed and opened with
//! [`crate::zmtp::boxes`] (libsodium, in place, helpers for long frames).

use super::{ZmtpError, bad, expect, nonce};
use crate::zmtp::boxes::{self, BoxKey, TAG};
use crate::zmtp::frame;

/// The start of a MESSAGE body up to and including the flags byte's ciphertext: name-size,
/// "MESSAGE", the short nonce, the tag. The frame follows it.
pub const PREFIX: usize = 1 + 7 + 8 + TAG + 1;

/// The boxes of an established connection.
pub struct Session {
    key: BoxKey,
    send_prefix: &'static [u8; 16],
    recv_prefix: &'static [u8; 16],
    send_nonce: u64,
    recv_nonce: u64,
    /// The last frame sealed by [`Session::seal_frame`], kept so that a long frame is not a
    /// fresh allocation (and fresh pages) every time.
    out: Vec<u8>,
}

impl Session {
    /// The session between our transient secret key `mine` and the peer's transient public
    /// key `their`; refused if that key is of low order (no shared secret).
    pub(super) fn new(
        their: [u8; 32],
        mine: [u8; 32],
        prefixes: (&'static [u8; 16], &'static [u8; 16]),
        nonces: (u64, u64),
    ) -> Result<Session, ZmtpError> {
        let key = BoxKey::new(&their, &mine)
            .ok_or_else(|| bad("CURVE handshake", "a transient key of low order"))?;
        Ok(Session {
            key,
            send_prefix: prefixes.0,
            recv_prefix: prefixes.1,
            send_nonce: nonces.0,
            recv_nonce: nonces.1,
            out: Vec::new(),
        })
    }

    /// Two handles on the session: one to seal what this side sends, one to open what it
    /// receives (for a connection whose reading and writing run in different tasks). Only the
    /// first may seal: both start from the same send nonce, and a nonce must never be used
    /// twice under one key.
    pub fn split(self) -> (Session, Session) {
        let other = Session {
            key: self.key.clone(),
            out: Vec::new(),
            ..self
        };
        (self, other)
    }

    /// Writes the MESSAGE body of `frame` (`flags`: bit 0 MORE, bit 1 COMMAND) into `body`,
    /// which is `PREFIX - 1 + 1 + frame.len()` bytes; takes the next nonce.
    fn seal_body(&mut self, flags: u8, frame: &[u8], body: &mut [u8]) {
        self.send_nonce += 1;
        let short = self.send_nonce.to_be_bytes();
        let n = nonce(self.send_prefix, &short);
        body[0] = 7;
        body[1..8].copy_from_slice(b"MESSAGE");
        body[8..16].copy_from_slice(&short);
        let (tag, boxed) = body[16..].split_at_mut(TAG);
        let t = boxes::seal_into(&self.key, &n, flags, frame, boxed, boxes::helpers());
        tag.copy_from_slice(&t);
    }

    /// A frame as a MESSAGE command body.
    pub fn seal(&mut self, flags: u8, frame: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; PREFIX + frame.len()];
        self.seal_body(flags, frame, &mut body);
        body
    }

    /// A frame as a whole ZMTP frame on the wire: a plain frame head (as libzmq sends it; MORE
    /// and COMMAND travel inside the box) and the MESSAGE body. The frame is encrypted straight
    /// into the returned buffer, which the session reuses.
    pub fn seal_frame(&mut self, flags: u8, frame: &[u8]) -> &[u8] {
        let (head, hn) = frame::encode(false, false, PREFIX + frame.len());
        let total = hn + PREFIX + frame.len();
        let mut out = std::mem::take(&mut self.out);
        if out.len() < total {
            // Every byte up to `total` is written below: grow without clearing what is there.
            out.resize(total, 0);
        }
        out[..hn].copy_from_slice(&head[..hn]);
        self.seal_body(flags, frame, &mut out[hn..total]);
        self.out = out;
        &self.out[..total]
    }

    /// Opens a MESSAGE whose body starts with `prefix` and whose frame (still encrypted) is
    /// `frame`: checks the name, that the nonce increases and the tag, then decrypts `frame`
    /// in place; returns the flags (bit 0 MORE, bit 1 COMMAND: a PING or PONG in the box).
    pub fn open_frame(&mut self, prefix: &[u8; PREFIX], frame: &mut [u8]) -> Result<u8, ZmtpError> {
        let data = expect(prefix, "MESSAGE")?;
        let short = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        if short <= self.recv_nonce {
            return Err(bad("MESSAGE", "a nonce that does not increase (replayed?)"));
        }
        let n = nonce(self.recv_prefix, &data[..8]);
        let tag: [u8; TAG] = data[8..8 + TAG].try_into().expect("16 bytes");
        let flags =
            boxes::open_in_place(&self.key, &n, &tag, data[8 + TAG], frame, boxes::helpers())
                .map_err(|_| bad("MESSAGE", "the box does not open: forged or damaged"))?;
        self.recv_nonce = short;
        if flags & !3 != 0 {
            return Err(bad("MESSAGE", format!("flags {flags:#04x}")));
        }
        Ok(flags)
    }

    /// Opens a whole MESSAGE command body: (flags, frame).
    pub fn open(&mut self, mut body: Vec<u8>) -> Result<(u8, Vec<u8>), ZmtpError> {
        expect(&body, "MESSAGE")?;
        if body.len() < PREFIX {
            return Err(bad(
                "MESSAGE",
                "shorter than a nonce, a tag and a flags byte",
            ));
        }
        let prefix: [u8; PREFIX] = body[..PREFIX].try_into().expect("PREFIX bytes");
        let flags = self.open_frame(&prefix, &mut body[PREFIX..])?;
        body.drain(..PREFIX);
        Ok((flags, body))
    }
}
