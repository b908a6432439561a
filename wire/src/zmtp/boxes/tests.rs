use super::*;
use crypto_box::aead::Aead;
use crypto_box::{SalsaBox, SecretKey};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Deterministic bytes that differ from position to position.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn seal_vec(key: &BoxKey, n: &[u8; NONCE], flags: u8, frame: &[u8], h: &Helpers) -> Vec<u8> {
    let mut out = vec![0u8; 1 + frame.len()];
    let tag = seal_into(key, n, flags, frame, &mut out, h);
    [&tag[..], &out].concat()
}

/// NaCl's `tests/secretbox.c` (as RustCrypto's `crypto_secretbox` tests carry it): the box of
/// the 131-byte message, split as flags byte + 130-byte frame.
#[test]
fn nacl_secretbox_known_answer() {
    let key = BoxKey(
        hex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
            .try_into()
            .unwrap(),
    );
    let nonce: [u8; NONCE] = hex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
        .try_into()
        .unwrap();
    let plain = hex(concat!(
        "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a",
        "1ac728d45e6c61296cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057",
        "e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc76897040",
        "e082f937763848645e0705"
    ));
    let boxed = hex(concat!(
        "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4",
        "476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738",
        "b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de",
        "56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5"
    ));
    let none = Helpers::new(0);
    assert_eq!(seal_vec(&key, &nonce, plain[0], &plain[1..], &none), boxed);
    let tag: [u8; TAG] = boxed[..TAG].try_into().unwrap();
    let mut frame = boxed[TAG + 1..].to_vec();
    let flags = open_in_place(&key, &nonce, &tag, boxed[TAG], &mut frame, &none);
    assert_eq!(flags, Ok(plain[0]));
    assert_eq!(frame, plain[1..]);
}

/// The same boxes as RustCrypto's `crypto_box` (the implementation brigade used before) for
/// every length across the first blocks, and each opens; one flipped bit anywhere is refused
/// and leaves the frame as it came.
#[test]
fn equals_crypto_box_and_refuses_any_flipped_bit() {
    let (a, b) = (
        SecretKey::from_bytes([5; 32]),
        SecretKey::from_bytes([6; 32]),
    );
    let theirs = SalsaBox::new(&a.public_key(), &b);
    let key = BoxKey::new(&a.public_key().to_bytes(), &b.to_bytes()).unwrap();
    let none = Helpers::new(0);
    for len in (0..300).chain([4095, 4096, 70_001]) {
        let nonce: [u8; NONCE] = bytes(NONCE, len as u8).try_into().unwrap();
        let frame = bytes(len, 3);
        let flags = (len % 4) as u8;
        let boxed = seal_vec(&key, &nonce, flags, &frame, &none);
        let plain = [&[flags][..], &frame].concat();
        assert_eq!(
            boxed,
            theirs.encrypt((&nonce).into(), &plain[..]).unwrap(),
            "{len}"
        );
        let tag: [u8; TAG] = boxed[..TAG].try_into().unwrap();
        let mut opened = boxed[TAG + 1..].to_vec();
        assert_eq!(
            open_in_place(&key, &nonce, &tag, boxed[TAG], &mut opened, &none),
            Ok(flags)
        );
        assert_eq!(opened, frame, "{len}");
        for at in [0, TAG, boxed.len() - 1, (TAG + boxed.len()) / 2] {
            let mut bad = boxed.clone();
            bad[at] ^= 0x10;
            let tag: [u8; TAG] = bad[..TAG].try_into().unwrap();
            let mut f = bad[TAG + 1..].to_vec();
            let r = open_in_place(&key, &nonce, &tag, bad[TAG], &mut f, &none);
            assert_eq!(r, Err(Forged), "len {len}, byte {at}");
            assert_eq!(f, bad[TAG + 1..], "a forged box is not decrypted");
        }
    }
}

/// Helpers change who does the work, not the bytes.
#[test]
fn helpers_make_the_same_boxes() {
    let key = BoxKey([9; KEY]);
    let nonce = [4u8; NONCE];
    let frame = bytes((3 << 20) + 17, 1);
    let (none, four) = (Helpers::new(0), Helpers::new(3));
    let boxed = seal_vec(&key, &nonce, 1, &frame, &none);
    assert_eq!(seal_vec(&key, &nonce, 1, &frame, &four), boxed);
    let tag: [u8; TAG] = boxed[..TAG].try_into().unwrap();
    let mut opened = boxed[TAG + 1..].to_vec();
    assert_eq!(
        open_in_place(&key, &nonce, &tag, boxed[TAG], &mut opened, &four),
        Ok(1)
    );
    assert!(opened == frame);
}

#[test]
fn a_low_order_peer_key_gives_no_session_key() {
    assert!(BoxKey::new(&[0; KEY], &[7; KEY]).is_none());
    assert!(
        BoxKey::new(
            &SecretKey::from_bytes([8; 32]).public_key().to_bytes(),
            &[7; KEY]
        )
        .is_some()
    );
}
