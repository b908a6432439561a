use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn meta(rank: &str) -> Metadata {
    vec![("X-Brigade-Rank".into(), rank.as_bytes().to_vec())]
}

#[test]
fn push_and_pull_shake_hands_and_exchange_metadata() {
    rt().block_on(async {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (ma, mb) = (meta("0"), meta("1"));
        let (pa, pb) = tokio::join!(
            handshake(&mut a, SocketType::Push, &ma),
            handshake(&mut b, SocketType::Pull, &mb),
        );
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        assert_eq!(property(&pa, "X-Brigade-Rank"), Some(&b"1"[..]));
        assert_eq!(property(&pb, "socket-type"), Some(&b"PUSH"[..]));
        assert_eq!(property(&pb, "X-Brigade-Rank"), Some(&b"0"[..]));
    });
}

#[test]
fn mismatched_socket_types_are_refused() {
    rt().block_on(async {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let none = Vec::new();
        let (pa, pb) = tokio::join!(
            handshake(&mut a, SocketType::Push, &none),
            handshake(&mut b, SocketType::Push, &none),
        );
        for r in [pa, pb] {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("ZeroMQ PUSH socket") && e.contains("only to PULL"),
                "{e}"
            );
        }
    });
}

#[test]
fn old_versions_strangers_and_other_mechanisms_are_refused() {
    rt().block_on(async {
        // (what the peer sends, what the refusal says)
        let mut zmtp2 = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 0x01, 0x07];
        zmtp2.extend([0u8; 8]);
        let mut curve = greeting::encode("CURVE", true).to_vec();
        curve.truncate(64);
        let table: Vec<(Vec<u8>, &str)> = vec![
            (zmtp2, "1 is ZMTP 2.0"),
            (
                vec![0x01, 0x00, b'h', b'i', 0, 0, 0, 0, 0, 0],
                "ZMTP 1.0 (it opened",
            ),
            (b"GET / HTTP/1.1\r\n".to_vec(), "not a ZeroMQ peer"),
            (curve, "CURVE"),
        ];
        for (bytes, says) in table {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let stranger = async move {
                b.write_all(&bytes).await.unwrap();
                // Keep the connection open until the other side has decided.
                let mut sink = Vec::new();
                let _ = b.read_to_end(&mut sink).await;
            };
            let us = async move {
                let e = handshake(&mut a, SocketType::Pull, &Vec::new())
                    .await
                    .unwrap_err();
                drop(a);
                e
            };
            let (e, ()) = tokio::join!(us, stranger);
            let e = e.to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    });
}

#[test]
fn messages_round_trip_in_aligned_frames_and_commands_pass_between_them() {
    rt().block_on(async {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let writer = async {
            write_message(&mut a, &[b"header", &big]).await.unwrap();
            write_command(
                &mut a,
                &Command::Ping {
                    ttl: 10,
                    context: b"c".to_vec(),
                },
            )
            .await
            .unwrap();
            write_message(&mut a, &[b"x"]).await.unwrap();
            drop(a);
        };
        let reader = async {
            let Inbound::Message(m) = read(&mut b, 1 << 20, 3).await.unwrap() else {
                panic!("a message")
            };
            assert_eq!((&m[0][..], m[1].len()), (&b"header"[..], 300_000));
            assert_eq!(&m[1][..], &big[..]);
            assert_eq!(m[1].as_ptr() as usize % 8, 0, "payloads are 8-aligned");
            assert!(matches!(
                read(&mut b, 1 << 20, 3).await.unwrap(),
                Inbound::Command(Command::Ping { ttl: 10, .. })
            ));
            assert!(matches!(
                read(&mut b, 1 << 20, 3).await.unwrap(),
                Inbound::Message(m) if m.len() == 1
            ));
            assert!(matches!(
                read(&mut b, 1 << 20, 3).await,
                Err(ZmtpError::Closed)
            ));
        };
        tokio::join!(writer, reader);
    });
}

#[test]
fn declared_lengths_are_refused_before_anything_is_read() {
    rt().block_on(async {
        // (bytes after the handshake, the error)
        let mut huge = vec![frame::LONG];
        huge.extend((1u64 << 40).to_be_bytes());
        let mut huge_command = vec![frame::LONG | frame::COMMAND];
        huge_command.extend((1u64 << 20).to_be_bytes());
        let four = [1u8, 1, b'a', 1, 1, b'b', 1, 1, b'c', 1, 1, b'd'].to_vec();
        let inside = [1u8, 1, b'a', frame::COMMAND, 5, 4, b'P', b'O', b'N', b'G'].to_vec();
        let table: Vec<(Vec<u8>, &str)> = vec![
            (
                huge,
                "a frame of 1099511627776 bytes exceeds this link's limit of 1048576",
            ),
            (huge_command, "exceeds this link's limit of 65536"),
            (vec![0x10, 1, 0], "reserved flag bits"),
            (four, "more than 3 frames"),
            (inside, "a command between the frames"),
            (vec![1, 5, b's'], "broke"),
        ];
        for (bytes, says) in table {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(&bytes).await.unwrap();
            drop(a);
            let e = read(&mut b, 1 << 20, 3).await.unwrap_err().to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    });
}
