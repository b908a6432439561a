//! Peer authentication with a job secret.
//!
//! Each receiving side draws a random 16-byte challenge and sends it in the hello of the
//! connection going the other way — to the neighbour's address from the topology, so only the
//! real neighbour sees it — signed with the secret, so that a stranger's hello cannot plant a
//! challenge of its own. The neighbour proves it knows the secret by answering, on its
//! connection to us, with `HMAC-SHA256(secret, "brigade-auth-v1" | run | topology | from | to |
//! challenge)`. Every later message on that connection ends with a 32-byte tag,
//! `BLAKE3-keyed(K, seq | frames)` where `K = HMAC-SHA256(secret, "brigade-frames-v1" | ... |
//! challenge)` and `seq` counts messages: frames injected by anyone without the secret, or
//! replayed, fail the tag and are dropped. (HMAC for the handshake; BLAKE3 for the per-frame tag
//! because it keeps up with megabyte activations.)

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Secrets shorter than this are refused.
pub const MIN_SECRET: usize = 16;
pub const TAG_LEN: usize = 32;

/// A random challenge from the operating system.
pub fn challenge() -> [u8; 16] {
    let mut c = [0u8; 16];
    getrandom::fill(&mut c).expect("the operating system provides random bytes");
    c
}

fn context(
    label: &[u8],
    run_id: u64,
    job_hash: u64,
    from: usize,
    to: usize,
    challenge: &[u8],
) -> Vec<u8> {
    let mut m = label.to_vec();
    m.extend(run_id.to_le_bytes());
    m.extend(job_hash.to_le_bytes());
    m.extend((from as u64).to_le_bytes());
    m.extend((to as u64).to_le_bytes());
    m.extend(challenge);
    m
}

/// The two ends of one handshake — messages from stage `from` to stage `to` of one job. Every
/// MAC binds them, so an answer or key for one direction or job is worthless for another.
#[derive(Debug, Clone, Copy)]
pub struct Between {
    pub run_id: u64,
    pub job_hash: u64,
    pub from: usize,
    pub to: usize,
}

impl Between {
    fn mac(&self, secret: &[u8], label: &[u8], challenge: &[u8]) -> Hmac<Sha256> {
        keyed(
            secret,
            &context(
                label,
                self.run_id,
                self.job_hash,
                self.from,
                self.to,
                challenge,
            ),
        )
    }

    fn bytes(&self, secret: &[u8], label: &[u8], challenge: &[u8]) -> [u8; 32] {
        self.mac(secret, label, challenge)
            .finalize()
            .into_bytes()
            .into()
    }

    /// The answer `from` gives to `to`'s challenge.
    pub fn answer(&self, secret: &[u8], challenge: &[u8]) -> [u8; 32] {
        self.bytes(secret, b"brigade-auth-v1", challenge)
    }

    /// Checks an answer in constant time.
    pub fn verify(&self, secret: &[u8], challenge: &[u8], got: &[u8]) -> bool {
        self.mac(secret, b"brigade-auth-v1", challenge)
            .verify_slice(got)
            .is_ok()
    }

    /// The signature on a hello carrying `challenge`: only a holder of the secret can make `to`
    /// publish a challenge, so a stranger's hello cannot divert `to`'s answer away from the
    /// real neighbour.
    pub fn sign_hello(&self, secret: &[u8], challenge: &[u8]) -> [u8; 32] {
        self.bytes(secret, b"brigade-hello-v1", challenge)
    }

    /// The challenge of a signed hello (`challenge | signature`), if the signature is right.
    pub fn verify_hello(&self, secret: &[u8], signed: &[u8]) -> Option<Vec<u8>> {
        let (challenge, sig) = signed.split_at_checked(16)?;
        self.mac(secret, b"brigade-hello-v1", challenge)
            .verify_slice(sig)
            .ok()
            .map(|()| challenge.to_vec())
    }

    /// The key that tags messages from `from` to `to` after the handshake.
    pub fn frame_key(&self, secret: &[u8], challenge: &[u8]) -> [u8; 32] {
        self.bytes(secret, b"brigade-frames-v1", challenge)
    }
}

fn keyed(secret: &[u8], msg: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac
}

/// The tag of message number `seq` made of `frames`.
pub fn tag(key: &[u8; 32], seq: u64, frames: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&seq.to_le_bytes());
    for f in frames {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f);
    }
    h.finalize().into()
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"0123456789abcdef";
    const X: &[u8] = b"0123456789abcdeX";

    fn between(from: usize, to: usize) -> Between {
        Between {
            run_id: 1,
            job_hash: 2,
            from,
            to,
        }
    }

    #[test]
    fn answers_verify_only_with_the_same_secret_and_context() {
        let c = challenge();
        let a = between(0, 1).answer(S, &c);
        assert!(between(0, 1).verify(S, &c, &a));
        assert!(!between(0, 1).verify(X, &c, &a));
        assert!(!between(1, 0).verify(S, &c, &a));
        assert!(!between(0, 1).verify(S, &challenge(), &a));
    }

    #[test]
    fn hellos_verify_only_with_the_secret_and_direction() {
        let c = challenge();
        let mut signed = c.to_vec();
        signed.extend(between(0, 1).sign_hello(S, &c));
        assert_eq!(between(0, 1).verify_hello(S, &signed), Some(c.to_vec()));
        assert_eq!(between(0, 1).verify_hello(X, &signed), None);
        assert_eq!(between(1, 0).verify_hello(S, &signed), None);
        assert_eq!(between(0, 1).verify_hello(S, &c), None);
        assert_eq!(between(0, 1).verify_hello(S, &[]), None);
    }

    #[test]
    fn tags_bind_sequence_and_content() {
        let k = between(0, 1).frame_key(S, &[7; 16]);
        let t = tag(&k, 5, &[b"head", b"payload"]);
        assert_eq!(t, tag(&k, 5, &[b"head", b"payload"]));
        assert_ne!(t, tag(&k, 6, &[b"head", b"payload"]));
        assert_ne!(t, tag(&k, 5, &[b"headp", b"ayload"]));
    }
}
