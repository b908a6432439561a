//! Only processes with the job secret take part: a wrong secret is refused (and logged with the
//! peer's address), forged frames from an intruder are dropped without changing the result,
//! and without a secret stages refuse to listen beyond loopback.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn topology(test: &str, offset: u16, address_b: &str) -> String {
    let port = test_port(offset);
    two_host_topology(test, port, address_b, port + 4)
}

#[test]
fn peer_with_the_wrong_secret_is_refused() {
    let file = topology("auth-wrong", 0, "127.0.0.1");
    let spawn = |k: &str, secret: &str| {
        brigade()
            .args([
                "stage",
                &file,
                "--stage",
                k,
                "--steps",
                "3",
                "--run-id",
                "auth-test",
                "--connect-timeout",
                "4",
            ])
            .env("BRIGADE_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    let a = spawn("0", "the-right-secret-0123456789");
    let b = spawn("1", "a-wrong-secret-9876543210xyz");
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!oa.status.success() && !ob.status.success());
    let both = format!("{}\n{}", stderr(&oa), stderr(&ob));
    assert!(both.contains("authentication failed"), "{both}");
    assert!(
        both.contains("connection from: tcp://127.0.0.1:"),
        "refusal must log the peer's address:\n{both}"
    );
}

/// What an intruder sends to rank 1's port (host b's port + 1) while a job runs: a ZMTP greeting
/// with the link's mechanism and then a frame head declaring 1 TiB (which made the zeromq
/// crate abort a stage, decision 0003) — after completing the NULL handshake without saying
/// who it is, or in the middle of CURVE's — a ZMTP 2.0 peer, a stranger speaking no ZMTP at
/// all, and under a secret (`secret`) CURVE clients without the job's keys: one with the
/// server's public key but a client key of its own, one that does not know the server's key.
/// Returns the connections, to hold them open.
async fn intrude(port: u16, secret: Option<&str>) -> Vec<tokio::net::TcpStream> {
    use brigade_engine::transport::net::JobKeys;
    use brigade_wire::zmtp::curve::KeyPair;
    use brigade_wire::zmtp::io::{Mechanism, handshake, handshake_with};
    use brigade_wire::zmtp::{SocketType, greeting};
    use tokio::io::AsyncWriteExt;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let connect = || async {
        loop {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(s) => return s,
                Err(_) => {
                    assert!(Instant::now() < deadline, "stage 1 never listened");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    // A ZMTP greeting with the link's mechanism, then a command frame declaring 1 TiB where
    // the handshake's next command belongs.
    let mut huge = connect().await;
    let mechanism = if secret.is_some() { "CURVE" } else { "NULL" };
    huge.write_all(&greeting::encode(mechanism, false))
        .await
        .unwrap();
    let mut m = vec![0x06u8]; // COMMAND | LONG
    m.extend((1u64 << 40).to_be_bytes());
    huge.write_all(&m).await.unwrap();
    let mut conns = Vec::new();
    if secret.is_none() {
        // A ZeroMQ peer that completes the handshake without saying who it is.
        let mut anonymous = connect().await;
        handshake(&mut anonymous, SocketType::Push, &Vec::new())
            .await
            .unwrap();
        conns.push(anonymous);
    }
    let mut zmtp2 = connect().await;
    let _ = zmtp2
        .write_all(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0x01, 0x08])
        .await;
    let mut junk = connect().await;
    let _ = junk.write_all(b"\x00\x05hello, is anybody there?").await;
    conns.extend([huge, zmtp2, junk]);
    if let Some(secret) = secret {
        let keys = JobKeys::from_secret(secret.as_bytes());
        for mechanism in [
            Mechanism::CurveClient {
                long: KeyPair::generate(),
                server: keys.server.public,
            },
            Mechanism::CurveClient {
                long: keys.client.clone(),
                server: KeyPair::generate().public,
            },
        ] {
            let mut c = connect().await;
            let e = handshake_with(&mut c, SocketType::Push, &Vec::new(), &mechanism).await;
            assert!(e.is_err(), "a CURVE client without the job's keys got in");
            conns.push(c);
        }
    }
    conns
}

/// Runs the two-host job `file` (300 steps) with an intruder on stage 1's activation port and
/// checks that it finishes with the reference's losses and logs the refusals.
fn survives_intruder(test: &str, file: &str, port_b: u16, secret: Option<&str>) {
    let dir = tmp(test);
    let (mb, rm) = (dir.join("b.jsonl"), dir.join("ref.jsonl"));
    let launch = |host: &str, metrics: Option<&std::path::Path>| {
        let mut c = brigade();
        c.args([
            "launch", file, "--host", host, "--steps", "300", "--run-id", test,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        match secret {
            Some(s) => c.env("BRIGADE_SECRET", s),
            None => c.env_remove("BRIGADE_SECRET"),
        };
        if let Some(m) = metrics {
            c.arg("--metrics").arg(m);
        }
        c.spawn().unwrap()
    };
    // Stage 1 first, so the intruder speaks before the real stage 0 connects.
    let b = launch("b", Some(&mb));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = rt.block_on(intrude(port_b + 1, secret));
    std::thread::sleep(Duration::from_millis(300));
    let a = launch("a", None);
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err_b = stderr(&ob);
    assert!(
        oa.status.success() && ob.status.success(),
        "the job must survive the intruder:\n{}\n{err_b}",
        stderr(&oa),
    );
    for what in [
        "refused a message",
        "connection from: tcp://127.0.0.1:",
        "exceeds this link's limit",
        "1 is ZMTP 2.0",
        "not a ZeroMQ peer",
    ] {
        assert!(err_b.contains(what), "stage 1 must log {what:?}:\n{err_b}");
    }
    drop(held);
    let only = if secret.is_some() {
        [
            "authentication failed (CURVE)",
            "a CURVE client key this job does not know",
        ]
        .as_slice()
    } else {
        ["without brigade's X-Brigade-Run"].as_slice()
    };
    for what in only {
        assert!(err_b.contains(what), "stage 1 must log {what:?}:\n{err_b}");
    }
    // The 1 TiB declaration allocated nothing: rank 1 stayed small.
    let rss = err_b
        .split("rank 1 ")
        .last()
        .and_then(|s| s.split(" MiB").next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS for rank 1 in:\n{err_b}"));
    assert!(rss < 256.0, "rank 1 peaked at {rss} MiB under the intruder");
    assert!(
        run(&[
            "reference",
            file,
            "--steps",
            "300",
            "--metrics",
            rm.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert_eq!(
        losses(&mb),
        losses(&rm),
        "the intruder changed the training"
    );
}

#[test]
fn forged_frames_from_an_intruder_are_dropped() {
    let file = topology("auth-intruder", 8, "127.0.0.1");
    let port_b = test_port(8 + 4);
    survives_intruder(
        "intruder-test",
        &file,
        port_b,
        Some("job-secret-for-the-intruder-test"),
    );
}

#[test]
fn oversized_and_foreign_connections_do_not_end_a_job_without_secret() {
    let file = topology("auth-oversized", 24, "127.0.0.1");
    let port_b = test_port(24 + 4);
    survives_intruder("oversized-test", &file, port_b, None);
}

#[test]
fn without_a_secret_only_loopback_is_allowed() {
    let file = topology("auth-none", 16, "198.18.0.2");
    let out = brigade()
        .args(["stage", &file, "--stage", "1", "--steps", "1"])
        .env_remove("BRIGADE_SECRET")
        .env_remove("BRIGADE_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("198.18.0.2")
            && err.contains("no job secret")
            && err.contains("BRIGADE_SECRET"),
        "{err}"
    );
}
