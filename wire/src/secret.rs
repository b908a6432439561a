//! The job secret and the CURVE keys derived from it.
//!
//! Every rank of a job derives the same two long-term key pairs from the secret: the servers'
//! (every listening PULL uses it) and the clients' (every connecting PUSH uses it). A PULL
//! accepts only the job's client key, so a connection that completes the CURVE handshake comes
//! from a holder of the secret, and everything after it is encrypted and authenticated
//! (gradients leak training data). `brigade keys` prints the keys in Z85, so an external ZeroMQ
//! tool can be let in on purpose.

use crate::zmtp::curve::KeyPair;

/// Secrets shorter than this are refused.
pub const MIN_SECRET: usize = 16;

/// The job's CURVE keys.
#[derive(Debug, Clone)]
pub struct JobKeys {
    pub server: KeyPair,
    pub client: KeyPair,
}

impl JobKeys {
    /// The keys every holder of `secret` derives (BLAKE3's key derivation, one context each).
    pub fn from_secret(secret: &[u8]) -> JobKeys {
        let derive = |context| KeyPair::from_secret(blake3::derive_key(context, secret));
        JobKeys {
            server: derive("brigade 2026-11 CURVE server key"),
            client: derive("brigade 2026-11 CURVE client key"),
        }
    }
}

/// Reads the job secret: `--secret-file`, else `$BRIGADE_SECRET_FILE`, else `$BRIGADE_SECRET`.
pub fn load_secret(file: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let from_file = |path: &str| -> Result<Vec<u8>, String> {
        let s =
            std::fs::read(path).map_err(|e| format!("{path}: cannot read the job secret: {e}"))?;
        Ok(s.strip_suffix(b"\n").unwrap_or(&s).to_vec())
    };
    let secret = match (
        file,
        std::env::var("BRIGADE_SECRET_FILE").ok(),
        std::env::var("BRIGADE_SECRET").ok(),
    ) {
        (Some(p), _, _) => Some(from_file(p)?),
        (None, Some(p), _) => Some(from_file(&p)?),
        (None, None, Some(s)) => Some(s.into_bytes()),
        _ => None,
    };
    match secret {
        Some(s) if s.len() < MIN_SECRET => Err(format!(
            "the job secret has {} bytes; use at least {MIN_SECRET} (e.g. `openssl rand -hex 32`)",
            s.len()
        )),
        other => Ok(other),
    }
}

/// Z85 (ZeroMQ RFC 32), the text form of CURVE keys: 4 bytes become 5 characters.
pub fn z85(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 85] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    assert!(
        bytes.len().is_multiple_of(4),
        "Z85 encodes multiples of 4 bytes"
    );
    let mut out = String::with_capacity(bytes.len() / 4 * 5);
    for chunk in bytes.chunks_exact(4) {
        let mut v = u32::from_be_bytes(chunk.try_into().expect("4 bytes"));
        let mut five = [0u8; 5];
        for c in five.iter_mut().rev() {
            *c = ALPHABET[(v % 85) as usize];
            v /= 85;
        }
        out.extend(five.iter().map(|&c| c as char));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_matches_the_specification() {
        // RFC 32's test vector.
        assert_eq!(
            z85(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]),
            "HelloWorld"
        );
        assert_eq!(z85(&[0u8; 32]).len(), 40);
    }

    #[test]
    fn keys_depend_on_the_secret_and_differ_by_role() {
        let a = JobKeys::from_secret(b"0123456789abcdef");
        let b = JobKeys::from_secret(b"0123456789abcdef");
        let c = JobKeys::from_secret(b"0123456789abcdeX");
        assert_eq!(a.server.public, b.server.public);
        assert_ne!(a.server.public, c.server.public);
        assert_ne!(a.server.public, a.client.public);
    }
}
