//! CurveZMQ (RFC 26/CURVEZMQ): the CURVE security mechanism of ZMTP 3.x, as pure state
//! machines for the client (the connecting PUSH) and the server (the listening PULL), and the
//! session that boxes every frame after the handshake. The boxes are NaCl's `crypto_box`
//! (X25519 + XSalsa20-Poly1305, RustCrypto's `crypto_box`) and the server's cookie a
//! `crypto_secretbox`. Keys: the client's and server's long-term pairs (C, c) and (S, s), and a
//! transient pair per connection on each side (C', c') and (S', s').
//!
//! ```text
//! client                                   server
//!   HELLO    C', Box[64 zeros](C'→S)     →
//!                                        ←  WELCOME  Box[S' + cookie](S→C')
//!   INITIATE cookie, Box[C + vouch + metadata](C'→S'), vouch = Box[C' + S](C→S')  →
//!                                        ←  READY    Box[metadata](S'→C')
//!   MESSAGE  Box[flags + frame](C'→S')   ⇄  MESSAGE  Box[flags + frame](S'→C')
//! ```
//!
//! Short nonces are 8-byte big-endian counters that must strictly increase in each direction,
//! so a replayed or reordered box is refused.

use super::command::{Metadata, decode_metadata, encode_metadata};
use super::error::ZmtpError;
use crypto_box::aead::{Aead, KeyInit};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use crypto_secretbox::XSalsa20Poly1305;

mod session;
pub use session::{PREFIX, Session};

pub const KEY: usize = 32;
const TAG: usize = 16;

/// A long-term or transient key pair.
#[derive(Clone)]
pub struct KeyPair {
    pub public: [u8; KEY],
    pub secret: [u8; KEY],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair {{ public: {:02x?}, .. }}", &self.public[..4])
    }
}

impl KeyPair {
    /// The pair whose secret key is `secret` (an X25519 scalar; clamped by the curve).
    pub fn from_secret(secret: [u8; KEY]) -> KeyPair {
        let public = SecretKey::from_bytes(secret).public_key().to_bytes();
        KeyPair { public, secret }
    }

    /// A fresh random pair (transient keys).
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(random())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source");
    b
}

fn bad(what: &'static str, why: impl Into<String>) -> ZmtpError {
    ZmtpError::Malformed {
        what,
        why: why.into(),
    }
}

fn nonce(prefix: &[u8], tail: &[u8]) -> [u8; 24] {
    debug_assert_eq!(prefix.len() + tail.len(), 24);
    let mut n = [0u8; 24];
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(tail);
    n
}

fn salsa(their_public: &[u8; KEY], my_secret: &[u8; KEY]) -> SalsaBox {
    SalsaBox::new(
        &PublicKey::from_bytes(*their_public),
        &SecretKey::from_bytes(*my_secret),
    )
}

/// `Box[plaintext](me → them)`: the tag, then the ciphertext.
fn seal(their_public: &[u8; KEY], my_secret: &[u8; KEY], n: &[u8; 24], plain: &[u8]) -> Vec<u8> {
    salsa(their_public, my_secret)
        .encrypt(n.into(), plain)
        .expect("encryption does not fail")
}

fn open(
    their_public: &[u8; KEY],
    my_secret: &[u8; KEY],
    n: &[u8; 24],
    boxed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, ZmtpError> {
    salsa(their_public, my_secret)
        .decrypt(n.into(), boxed)
        .map_err(|_| {
            bad(
                what,
                "the box does not open: wrong keys, or forged or damaged",
            )
        })
}

/// A command body: name-size, name, data.
fn command(name: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    for p in parts {
        b.extend_from_slice(p);
    }
    b
}

/// The data of a command body named `name` (refused if it is another command).
fn expect<'a>(body: &'a [u8], name: &str) -> Result<&'a [u8], ZmtpError> {
    let n = *body
        .first()
        .ok_or_else(|| bad("CURVE handshake", "an empty command"))? as usize;
    match body.get(1..1 + n) {
        Some(got) if got == name.as_bytes() => Ok(&body[1 + n..]),
        Some(b"ERROR") => {
            let reason = body.get(1 + n + 1..).unwrap_or_default();
            Err(ZmtpError::PeerError(
                String::from_utf8_lossy(reason).into_owned(),
            ))
        }
        Some(got) => Err(ZmtpError::Unexpected(format!(
            "{} command (expected {name})",
            String::from_utf8_lossy(got)
        ))),
        None => Err(bad("CURVE handshake", "a truncated command name")),
    }
}

/// The client's side of the handshake.
pub struct Client {
    long: KeyPair,
    server: [u8; KEY],
    transient: KeyPair,
    nonce: u64,
    server_transient: [u8; KEY],
}

impl Client {
    /// A client with long-term keys `long` for the server whose public key is `server`.
    pub fn new(long: KeyPair, server: [u8; KEY]) -> Client {
        Client {
            long,
            server,
            transient: KeyPair::generate(),
            nonce: 0,
            server_transient: [0; KEY],
        }
    }

    fn next_nonce(&mut self) -> [u8; 8] {
        self.nonce += 1;
        self.nonce.to_be_bytes()
    }

    /// HELLO.
    pub fn hello(&mut self) -> Vec<u8> {
        let short = self.next_nonce();
        let signature = seal(
            &self.server,
            &self.transient.secret,
            &nonce(b"CurveZMQHELLO---", &short),
            &[0u8; 64],
        );
        command(
            "HELLO",
            &[
                &[1, 0],
                &[0u8; 72],
                &self.transient.public,
                &short,
                &signature,
            ],
        )
    }

    /// Reads WELCOME; returns INITIATE (announcing `metadata`).
    pub fn on_welcome(&mut self, body: &[u8], metadata: &Metadata) -> Result<Vec<u8>, ZmtpError> {
        let data = expect(body, "WELCOME")?;
        if data.len() != 16 + 144 {
            return Err(bad("WELCOME", format!("{} bytes", data.len())));
        }
        let plain = open(
            &self.server,
            &self.transient.secret,
            &nonce(b"WELCOME-", &data[..16]),
            &data[16..],
            "WELCOME",
        )?;
        self.server_transient.copy_from_slice(&plain[..KEY]);
        let cookie = &plain[KEY..];
        let vouch_nonce: [u8; 16] = random();
        let vouch = seal(
            &self.server_transient,
            &self.long.secret,
            &nonce(b"VOUCH---", &vouch_nonce),
            &[&self.transient.public[..], &self.server[..]].concat(),
        );
        let mut plain = self.long.public.to_vec();
        plain.extend_from_slice(&vouch_nonce);
        plain.extend(vouch);
        plain.extend(encode_metadata(metadata));
        let short = self.next_nonce();
        let boxed = seal(
            &self.server_transient,
            &self.transient.secret,
            &nonce(b"CurveZMQINITIATE", &short),
            &plain,
        );
        Ok(command("INITIATE", &[cookie, &short, &boxed]))
    }

    /// Reads READY: the server's metadata, and the session.
    pub fn on_ready(self, body: &[u8]) -> Result<(Metadata, Session), ZmtpError> {
        let data = expect(body, "READY")?;
        if data.len() < 8 + TAG {
            return Err(bad("READY", "too short"));
        }
        let plain = open(
            &self.server_transient,
            &self.transient.secret,
            &nonce(b"CurveZMQREADY---", &data[..8]),
            &data[8..],
            "READY",
        )?;
        let session = Session::new(
            self.server_transient,
            self.transient.secret,
            (b"CurveZMQMESSAGEC", b"CurveZMQMESSAGES"),
            (
                self.nonce,
                u64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
            ),
        )?;
        Ok((decode_metadata(&plain)?, session))
    }
}

/// The server's side of the handshake.
pub struct Server {
    long: KeyPair,
    /// Client long-term public keys that may connect.
    allowed: Vec<[u8; KEY]>,
    cookie_key: [u8; KEY],
    transient: KeyPair,
    client_transient: [u8; KEY],
    nonce: u64,
    peer_nonce: u64,
}

impl Server {
    pub fn new(long: KeyPair, allowed: Vec<[u8; KEY]>) -> Server {
        Server {
            long,
            allowed,
            cookie_key: random(),
            transient: KeyPair::generate(),
            client_transient: [0; KEY],
            nonce: 0,
            peer_nonce: 0,
        }
    }

    /// Reads HELLO; returns WELCOME.
    pub fn on_hello(&mut self, body: &[u8]) -> Result<Vec<u8>, ZmtpError> {
        let data = expect(body, "HELLO")?;
        if data.len() != 2 + 72 + 32 + 8 + 80 || data[..2] != [1, 0] {
            return Err(bad(
                "HELLO",
                format!(
                    "{} bytes, version {:?}",
                    data.len(),
                    &data[..2.min(data.len())]
                ),
            ));
        }
        self.client_transient.copy_from_slice(&data[74..106]);
        let short = &data[106..114];
        let zeros = open(
            &self.client_transient,
            &self.long.secret,
            &nonce(b"CurveZMQHELLO---", short),
            &data[114..],
            "HELLO",
        )?;
        if zeros != [0u8; 64] {
            return Err(bad("HELLO", "the signature box does not hold 64 zeros"));
        }
        self.peer_nonce = u64::from_be_bytes(short.try_into().expect("8 bytes"));
        let cookie_nonce: [u8; 16] = random();
        let cookie_box = XSalsa20Poly1305::new((&self.cookie_key).into())
            .encrypt(
                (&nonce(b"COOKIE--", &cookie_nonce)).into(),
                &[&self.client_transient[..], &self.transient.secret[..]].concat()[..],
            )
            .expect("encryption does not fail");
        let mut plain = self.transient.public.to_vec();
        plain.extend_from_slice(&cookie_nonce);
        plain.extend(cookie_box);
        let welcome_nonce: [u8; 16] = random();
        let boxed = seal(
            &self.client_transient,
            &self.long.secret,
            &nonce(b"WELCOME-", &welcome_nonce),
            &plain,
        );
        Ok(command("WELCOME", &[&welcome_nonce, &boxed]))
    }

    /// Reads INITIATE (checking the cookie, the vouch and that the client's long-term key is
    /// allowed); returns the client's metadata and READY (announcing `metadata`), and the
    /// session.
    pub fn on_initiate(
        mut self,
        body: &[u8],
        metadata: &Metadata,
    ) -> Result<(Metadata, Vec<u8>, Session), ZmtpError> {
        let data = expect(body, "INITIATE")?;
        if data.len() < 96 + 8 + TAG + 128 {
            return Err(bad("INITIATE", "too short"));
        }
        let cookie = XSalsa20Poly1305::new((&self.cookie_key).into())
            .decrypt((&nonce(b"COOKIE--", &data[..16])).into(), &data[16..96])
            .map_err(|_| bad("INITIATE", "a cookie this server did not make"))?;
        if cookie[..KEY] != self.client_transient || cookie[KEY..] != self.transient.secret {
            return Err(bad("INITIATE", "a cookie for another connection"));
        }
        let short = &data[96..104];
        let short_n = u64::from_be_bytes(short.try_into().expect("8 bytes"));
        if short_n <= self.peer_nonce {
            return Err(bad("INITIATE", "a nonce that does not increase"));
        }
        let plain = open(
            &self.client_transient,
            &self.transient.secret,
            &nonce(b"CurveZMQINITIATE", short),
            &data[104..],
            "INITIATE",
        )?;
        let client: [u8; KEY] = plain[..KEY].try_into().expect("32 bytes");
        let vouch = open(
            &client,
            &self.transient.secret,
            &nonce(b"VOUCH---", &plain[KEY..KEY + 16]),
            &plain[KEY + 16..KEY + 16 + 80],
            "INITIATE vouch",
        )?;
        if vouch[..KEY] != self.client_transient || vouch[KEY..] != self.long.public {
            return Err(bad(
                "INITIATE",
                "the vouch names another connection or server",
            ));
        }
        if !self.allowed.contains(&client) {
            return Err(ZmtpError::PeerError(
                "a CURVE client key this job does not know (not derived from the job secret)"
                    .into(),
            ));
        }
        let theirs = decode_metadata(&plain[KEY + 16 + 80..])?;
        self.nonce += 1;
        let short = self.nonce.to_be_bytes();
        let boxed = seal(
            &self.client_transient,
            &self.transient.secret,
            &nonce(b"CurveZMQREADY---", &short),
            &encode_metadata(metadata),
        );
        let session = Session::new(
            self.client_transient,
            self.transient.secret,
            (b"CurveZMQMESSAGES", b"CurveZMQMESSAGEC"),
            (self.nonce, short_n),
        )?;
        Ok((theirs, command("READY", &[&short, &boxed]), session))
    }
}

#[cfg(test)]
mod tests;
