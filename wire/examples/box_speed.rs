//! One core's CURVE box speed: RustCrypto's `crypto_box` (what brigade used before decision
//! 0017) against the libsodium boxes brigade seals and opens with, on 4 MiB frames.
//! `cargo run --release -p brigade-wire --example box_speed [threads]`

use brigade_wire::zmtp::boxes::{BoxKey, Helpers, open_in_place, seal_into};
use crypto_box::aead::AeadInPlace;
use crypto_box::{SalsaBox, SecretKey};
use std::time::Instant;

fn rate(what: &str, len: usize, reps: usize, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let gbps = (len * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!("  {what:<44} {gbps:5.2} GB/s");
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let (len, reps) = (4 << 20, 50);
    let (a, b) = (
        SecretKey::from_bytes([5; 32]),
        SecretKey::from_bytes([6; 32]),
    );
    let rc = SalsaBox::new(&a.public_key(), &b);
    let key = BoxKey::new(&a.public_key().to_bytes(), &b.to_bytes()).unwrap();
    let helpers = Helpers::new(threads);
    let nonce = [3u8; 24];
    let frame = vec![7u8; len];
    let mut buf = vec![0u8; len + 1];
    println!("4 MiB boxes, {threads} helper threads:");
    rate("RustCrypto crypto_box, seal in place", len, reps, || {
        rc.encrypt_in_place_detached((&nonce).into(), b"", &mut buf)
            .unwrap();
    });
    let mut tag = [0u8; 16];
    rate("libsodium, seal from the frame", len, reps, || {
        tag = seal_into(&key, &nonce, 0, &frame, &mut buf, &helpers);
    });
    let sealed = buf.clone();
    let mut opened = sealed[1..].to_vec();
    rate(
        "libsodium, open in place (tag, then XOR)",
        len,
        reps,
        || {
            opened.copy_from_slice(&sealed[1..]);
            open_in_place(&key, &nonce, &tag, sealed[0], &mut opened, &helpers).unwrap();
        },
    );
}
