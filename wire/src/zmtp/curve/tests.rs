use super::*;

fn pairs() -> (KeyPair, KeyPair) {
    (KeyPair::from_secret([1; 32]), KeyPair::from_secret([2; 32]))
}

fn meta(s: &str) -> Metadata {
    vec![("Socket-Type".into(), s.as_bytes().to_vec())]
}

/// A full handshake; returns both sessions.
fn handshake(
    client_long: KeyPair,
    server_long: KeyPair,
    allowed: Vec<[u8; 32]>,
) -> Result<(Session, Session), ZmtpError> {
    let mut c = Client::new(client_long, server_long.public);
    let mut s = Server::new(server_long, allowed);
    let welcome = s.on_hello(&c.hello())?;
    let initiate = c.on_welcome(&welcome, &meta("PUSH"))?;
    let (client_meta, ready, ss) = s.on_initiate(&initiate, &meta("PULL"))?;
    assert_eq!(client_meta, meta("PUSH"));
    let (server_meta, cs) = c.on_ready(&ready)?;
    assert_eq!(server_meta, meta("PULL"));
    Ok((cs, ss))
}

#[test]
fn the_handshake_and_messages_work_both_ways() {
    let (client, server) = pairs();
    let (mut cs, mut ss) = handshake(client.clone(), server, vec![client.public]).unwrap();
    let m = cs.seal(1, b"header");
    assert_eq!(ss.open(m).unwrap(), (1, b"header".to_vec()));
    let big = vec![7u8; 100_000];
    let m = cs.seal(0, &big);
    assert_eq!(ss.open(m).unwrap(), (0, big));
    let back = ss.seal(0, b"pong");
    assert_eq!(cs.open(back).unwrap(), (0, b"pong".to_vec()));
}

#[test]
fn replayed_forged_and_misdirected_boxes_are_refused() {
    let (client, server) = pairs();
    let (mut cs, mut ss) = handshake(client.clone(), server, vec![client.public]).unwrap();
    let m = cs.seal(0, b"x");
    assert!(ss.open(m.clone()).is_ok());
    assert!(
        ss.open(m)
            .unwrap_err()
            .to_string()
            .contains("does not increase")
    );
    let mut forged = cs.seal(0, b"y");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(
        ss.open(forged)
            .unwrap_err()
            .to_string()
            .contains("does not open")
    );
    // A client→server box sent back to the client does not open there (other nonce prefix).
    let to_server = cs.seal(0, b"z");
    assert!(cs.open(to_server).is_err());
}

#[test]
fn unknown_clients_and_wrong_servers_are_refused() {
    let (client, server) = pairs();
    let stranger = KeyPair::from_secret([3; 32]);
    let e = handshake(stranger, server.clone(), vec![client.public])
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("client key this job does not know"),
        "{e}"
    );
    // A client that believes in another server key: the server cannot open its HELLO.
    let mut c = Client::new(client.clone(), KeyPair::from_secret([4; 32]).public);
    let mut s = Server::new(server, vec![client.public]);
    assert!(
        s.on_hello(&c.hello())
            .unwrap_err()
            .to_string()
            .contains("does not open")
    );
}

#[test]
fn truncated_and_foreign_commands_are_errors_not_panics() {
    let (client, server) = pairs();
    let mut s = Server::new(server.clone(), vec![client.public]);
    for body in [
        &b""[..],
        b"\x05HELLO",
        b"\x05HELLO\x01\x00",
        b"\x07WELCOME",
        b"\x09HELLO",
    ] {
        assert!(s.on_hello(body).is_err(), "{body:02x?}");
    }
    let mut c = Client::new(client, server.public);
    let _ = c.hello();
    assert!(c.on_welcome(b"\x07WELCOME\x00", &Vec::new()).is_err());
    assert!(matches!(
        c.on_welcome(b"\x05ERROR\x03bad", &Vec::new()),
        Err(ZmtpError::PeerError(r)) if r == "bad"
    ));
}
