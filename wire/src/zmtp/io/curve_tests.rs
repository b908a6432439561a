//! CURVE on the wire: boxed messages and commands round-trip into aligned frames, and a
//! tampered, replayed, reordered, truncated or unboxed frame is refused with an error.

use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A PUSH's and a PULL's sessions after a real CURVE handshake over a pipe.
fn sessions() -> (Session, Session) {
    let (client, server) = (KeyPair::from_secret([1; 32]), KeyPair::from_secret([2; 32]));
    let push = Mechanism::CurveClient {
        long: client.clone(),
        server: server.public,
    };
    let pull = Mechanism::CurveServer {
        long: server,
        allowed: vec![client.public],
    };
    rt().block_on(async {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let none = Vec::new();
        let (pa, pb) = tokio::join!(
            handshake_with(&mut a, SocketType::Push, &none, &push),
            handshake_with(&mut b, SocketType::Pull, &none, &pull),
        );
        (pa.unwrap().1.unwrap(), pb.unwrap().1.unwrap())
    })
}

/// What `frames` look like on the wire when `s` sends them.
fn wire(s: &mut Session, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    rt().block_on(write_boxed(&mut out, frames, s)).unwrap();
    out
}

fn read_all(bytes: &[u8], s: &mut Session) -> Vec<Result<Inbound, ZmtpError>> {
    rt().block_on(async {
        let mut r = bytes;
        let mut got = Vec::new();
        while !r.is_empty() {
            let one = read_boxed(&mut r, 1 << 20, 3, s).await;
            let stop = one.is_err();
            got.push(one);
            if stop {
                break;
            }
        }
        got
    })
}

fn refused(got: &[Result<Inbound, ZmtpError>], why: &str) {
    let e = got.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(e.contains(why), "{e}");
    assert!(got[..got.len() - 1].iter().all(Result::is_ok));
}

#[test]
fn boxed_messages_arrive_in_aligned_frames_and_commands_pass_between_them() {
    let (mut push, mut pull) = sessions();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let mut bytes = wire(&mut push, &[b"header", &big]);
    let ping = Command::Ping {
        ttl: 10,
        context: b"c".to_vec(),
    };
    rt().block_on(write_boxed_command(&mut bytes, &ping, &mut push))
        .unwrap();
    bytes.extend(wire(&mut push, &[b"x"]));
    let got = read_all(&bytes, &mut pull);
    let Ok(Inbound::Message(m)) = &got[0] else {
        panic!("a message: {got:?}")
    };
    assert_eq!((&m[0][..], &m[1][..]), (&b"header"[..], &big[..]));
    assert_eq!(
        m[1].as_ptr() as usize % 8,
        0,
        "payloads are opened where they are 8-aligned"
    );
    assert!(matches!(
        &got[1],
        Ok(Inbound::Command(Command::Ping { ttl: 10, .. }))
    ));
    assert!(matches!(&got[2], Ok(Inbound::Message(m)) if &m[0][..] == b"x"));
}

#[test]
fn tampered_replayed_reordered_and_unboxed_frames_are_refused() {
    let (mut push, mut pull) = sessions();
    let (one, two) = (wire(&mut push, &[b"one"]), wire(&mut push, &[&[5u8; 4096]]));
    let mut tampered = two.clone();
    *tampered.last_mut().unwrap() ^= 1;
    refused(&read_all(&tampered, &mut pull), "does not open");
    // The refused box did not advance the nonce: the real one still opens, then again not.
    refused(
        &read_all(&[&two[..], &two].concat(), &mut pull),
        "does not increase",
    );
    refused(&read_all(&one, &mut pull), "does not increase");

    let (mut push, mut pull) = sessions();
    let three = wire(&mut push, &[b"three"]);
    let mut plain = Vec::new();
    rt().block_on(write_command(
        &mut plain,
        &Command::Pong { context: vec![] },
    ))
    .unwrap();
    refused(
        &read_all(&[&three[..], &plain].concat(), &mut pull),
        "not a MESSAGE box",
    );
    // A MESSAGE too short to hold a nonce, a tag and the flags: refused, not a panic.
    let short = [&[0u8, 20, 7][..], b"MESSAGE", &[0u8; 12]].concat();
    refused(&read_all(&short, &mut pull), "shorter than");
}
