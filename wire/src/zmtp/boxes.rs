//! CURVE's per-frame boxes at link speed: NaCl's XSalsa20-Poly1305 (`crypto_box_afternm`,
//! i.e. `crypto_secretbox` under the session's precomputed key) through libsodium, which picks
//! SSE2/AVX2 code for Salsa20 and Poly1305 at run time — the library and code paths libzmq's
//! CURVE uses. RustCrypto's `salsa20` has only portable code (one 64-byte block at a time),
//! which held CURVE to a tenth of NULL (decision 0017).
//!
//! The box of a MESSAGE is `flags ‖ frame`. Sealing writes the ciphertext straight from the
//! frame's memory into the outgoing buffer, and opening decrypts in place in the aligned buffer
//! the frame was read into, so neither side copies the frame to put a flags byte before it.
//! That needs the secretbox built from its two parts (libsodium's Salsa20 stream and Poly1305;
//! no primitive is written here): keystream block 0 gives the Poly1305 key (bytes 0..32) and
//! the key stream for the flags and the frame's first 31 bytes (32..64); the rest of the frame
//! is XORed from block 1 on. Known-answer vectors (NaCl's `secretbox` test) and a comparison
//! with RustCrypto's `crypto_box` for every length up to a few blocks check the composition
//! (`boxes/tests.rs`).
//!
//! Opening checks the tag over the whole ciphertext before a byte is decrypted. The Salsa20
//! stream is seekable (its block counter), so long frames are XORed in segments on the
//! [`Helpers`] threads; Poly1305 is one pass on the caller's thread.

mod helpers;

use libsodium_sys as ffi;
use std::sync::OnceLock;

pub use helpers::{ENV, Helpers, from_env, helpers, idle_cores, set_helpers};

pub const KEY: usize = 32;
pub const TAG: usize = 16;
pub const NONCE: usize = 24;
/// Bytes of keystream block 0 that the flags byte and the frame use (after the Poly1305 key).
const HEAD: usize = 32;

/// libsodium picks its fastest code for this CPU in `sodium_init`; before it runs, the
/// portable code would be used.
fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: sodium_init is thread-safe and idempotent.
        let r = unsafe { ffi::sodium_init() };
        assert!(r >= 0, "libsodium failed to initialise");
    });
}

/// The session's precomputed key: `crypto_box_beforenm(their public, my secret)`.
#[derive(Clone)]
pub struct BoxKey([u8; KEY]);

impl BoxKey {
    /// `None` when the shared point is degenerate (their key is of low order) — libzmq refuses
    /// such a peer the same way.
    pub fn new(their_public: &[u8; KEY], my_secret: &[u8; KEY]) -> Option<BoxKey> {
        init();
        let mut k = [0u8; KEY];
        // SAFETY: the three pointers are to 32-byte arrays, as crypto_box_beforenm reads/writes.
        let r = unsafe {
            ffi::crypto_box_beforenm(k.as_mut_ptr(), their_public.as_ptr(), my_secret.as_ptr())
        };
        (r == 0).then_some(BoxKey(k))
    }

    /// Keystream block 0 for `nonce`: the Poly1305 key, then 32 bytes for the box's start.
    fn block0(&self, nonce: &[u8; NONCE]) -> [u8; 64] {
        let mut b = [0u8; 64];
        // SAFETY: b is 64 bytes, nonce 24 and the key 32, as crypto_stream_xsalsa20 expects.
        unsafe { ffi::crypto_stream_xsalsa20(b.as_mut_ptr(), 64, nonce.as_ptr(), self.0.as_ptr()) };
        b
    }

    /// XORs `len` bytes at `src` into `dst` (which may be `src`) with the key stream from
    /// block `block` on.
    ///
    /// # Safety
    /// `src` must be readable and `dst` writable for `len` bytes; they are equal or disjoint.
    unsafe fn xor_raw(
        &self,
        nonce: &[u8; NONCE],
        block: u64,
        src: *const u8,
        dst: *mut u8,
        len: usize,
    ) {
        // SAFETY: as the caller promises; libsodium's stream XOR works in place.
        unsafe {
            ffi::crypto_stream_xsalsa20_xor_ic(
                dst,
                src,
                len as u64,
                nonce.as_ptr(),
                block,
                self.0.as_ptr(),
            )
        };
    }
}

/// Poly1305, fed in pieces (libsodium's streaming state).
struct Mac(ffi::crypto_onetimeauth_poly1305_state);

impl Mac {
    /// Under the one-time key `key` (32 bytes).
    fn new(key: &[u8]) -> Mac {
        assert_eq!(key.len(), 32);
        let mut state = ffi::crypto_onetimeauth_poly1305_state { opaque: [0; 256] };
        // SAFETY: the state is libsodium's (256 bytes, 16-aligned) and the key 32 bytes.
        unsafe { ffi::crypto_onetimeauth_poly1305_init(&mut state, key.as_ptr()) };
        Mac(state)
    }

    fn update(&mut self, part: &[u8]) {
        // SAFETY: `part` is readable for its length.
        unsafe {
            ffi::crypto_onetimeauth_poly1305_update(&mut self.0, part.as_ptr(), part.len() as u64)
        };
    }

    fn finish(mut self) -> [u8; TAG] {
        let mut tag = [0u8; TAG];
        // SAFETY: the tag is 16 bytes.
        unsafe { ffi::crypto_onetimeauth_poly1305_final(&mut self.0, tag.as_mut_ptr()) };
        tag
    }
}

/// On one thread, a long frame is sealed in pieces of this size, each MACed right after it is
/// encrypted, while it is still in L1/L2 (a 4 MiB frame and its box do not fit this VM's
/// 8 MiB L3 together). A multiple of 64: pieces start on Salsa20 blocks.
const PIECE: usize = 16 << 10;

/// `Box[flags ‖ frame]` written as ciphertext into `out` (`1 + frame.len()` bytes); returns
/// the tag. Equals `crypto_box_detached_afternm(flags ‖ frame)` without building `flags ‖
/// frame`.
pub fn seal_into(
    key: &BoxKey,
    nonce: &[u8; NONCE],
    flags: u8,
    frame: &[u8],
    out: &mut [u8],
    pool: &Helpers,
) -> [u8; TAG] {
    assert_eq!(
        out.len(),
        1 + frame.len(),
        "the box is the flags byte and the frame"
    );
    let b0 = key.block0(nonce);
    let head = frame.len().min(HEAD - 1);
    out[0] = flags ^ b0[HEAD];
    for i in 0..head {
        out[1 + i] = frame[i] ^ b0[HEAD + 1 + i];
    }
    let mut mac = Mac::new(&b0[..HEAD]);
    mac.update(&out[..1 + head]);
    let (src, dst) = (&frame[head..], &mut out[1 + head..]);
    if pool.threads() == 0 {
        for at in (0..src.len()).step_by(PIECE) {
            let len = PIECE.min(src.len() - at);
            // SAFETY: src and dst are distinct slices of equal length; `at..at + len` lies in
            // both and starts on a block boundary.
            unsafe {
                let (s, d) = (src.as_ptr().add(at), dst.as_mut_ptr().add(at));
                key.xor_raw(nonce, 1 + (at / 64) as u64, s, d, len);
            }
            mac.update(&dst[at..at + len]);
        }
    } else {
        xor_segments(key, nonce, src, dst, pool);
        mac.update(dst);
    }
    mac.finish()
}

/// XORs `src` into `dst` from keystream block 1 on, in segments on the helpers.
fn xor_segments(key: &BoxKey, nonce: &[u8; NONCE], src: &[u8], dst: &mut [u8], pool: &Helpers) {
    // The helpers read and write disjoint ranges through shared addresses.
    let (src, dst, n) = (src.as_ptr() as usize, dst.as_mut_ptr() as usize, src.len());
    pool.segments(n, &|start, len| {
        let (s, d) = (
            (src as *const u8).wrapping_add(start),
            (dst as *mut u8).wrapping_add(start),
        );
        // SAFETY: the frame and `out` are borrowed for the whole call and do not overlap; the
        // helpers hand out disjoint in-bounds ranges, each starting on a block boundary.
        unsafe { key.xor_raw(nonce, 1 + (start / 64) as u64, s, d, len) }
    });
}

/// The box was forged or damaged (or sealed under other keys or another nonce).
#[derive(Debug, PartialEq, Eq)]
pub struct Forged;

/// Opens `Box[flags ‖ frame]` whose ciphertext is `first` (the flags byte) and `frame`, which
/// is decrypted in place; returns the flags. The tag is checked before anything is
/// decrypted: a forged box leaves `frame` as it came.
pub fn open_in_place(
    key: &BoxKey,
    nonce: &[u8; NONCE],
    tag: &[u8; TAG],
    first: u8,
    frame: &mut [u8],
    pool: &Helpers,
) -> Result<u8, Forged> {
    let b0 = key.block0(nonce);
    let mut mac = Mac::new(&b0[..HEAD]);
    mac.update(&[first]);
    mac.update(frame);
    let ours = mac.finish();
    // SAFETY: both are 16 bytes; crypto_verify_16 compares in constant time.
    if unsafe { ffi::crypto_verify_16(ours.as_ptr(), tag.as_ptr()) } != 0 {
        return Err(Forged);
    }
    let head = frame.len().min(HEAD - 1);
    for i in 0..head {
        frame[i] ^= b0[HEAD + 1 + i];
    }
    let rest = &mut frame[head..];
    // The helpers write disjoint ranges of `rest` through a shared address.
    let (base, n) = (rest.as_mut_ptr() as usize, rest.len());
    pool.segments(n, &|start, len| {
        let p = (base as *mut u8).wrapping_add(start);
        // SAFETY: `rest` is borrowed mutably for the whole call and the helpers hand out
        // disjoint in-bounds ranges starting on block boundaries; XOR in place is allowed.
        unsafe { key.xor_raw(nonce, 1 + (start / 64) as u64, p, p, len) }
    });
    Ok(first ^ b0[HEAD])
}

#[cfg(test)]
mod tests;
