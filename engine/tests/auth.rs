//! Only processes with the job secret take part: a wrong secret is refused (and logged with the
//! peer's address), forged frames from an intruder are dropped without changing the result,
//! and without a secret stages refuse to listen beyond loopback.

mod common;

use brigade_stages::codec::{Kind, Route, encode};
use burn::tensor::TensorData;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn topology(test: &str, offset: u16, address_b: &str) -> String {
    let port = 24_000 + (std::process::id() % 15_000) as u16 + offset;
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

/// What an intruder sends to stage 1's activation port while a job runs: a ZeroMQ PUSH that
/// completes the ZMTP handshake without saying who it is and then declares a 1 TiB frame (which
/// made the zeromq crate abort a stage, decision 0003), a ZMTP 2.0 peer, a stranger speaking no
/// ZMTP at all, and — under a secret (`forge`) — a ZeroMQ PUSH claiming to be rank 0 with a
/// hello of its own, then well-formed tensors of the right shape for every micro-batch of the
/// first steps. Returns the connections, to hold them open.
async fn intrude(port: u16, forge: Option<Hello>) -> Vec<tokio::net::TcpStream> {
    use brigade_engine::transport::net::meta;
    use brigade_engine::transport::net::zmtp::SocketType;
    use brigade_engine::transport::net::zmtp::io::{handshake, write_message};
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
    let mut huge = connect().await;
    handshake(&mut huge, SocketType::Push, &Vec::new())
        .await
        .unwrap();
    let mut m = vec![0x02u8];
    m.extend((1u64 << 40).to_be_bytes());
    huge.write_all(&m).await.unwrap();
    let mut zmtp2 = connect().await;
    let _ = zmtp2
        .write_all(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0x01, 0x08])
        .await;
    let mut junk = connect().await;
    let _ = junk.write_all(b"\x00\x05hello, is anybody there?").await;
    let mut forged = connect().await;
    if let Some(hello) = forge {
        let claims = meta::ours(hello.run_id, hello.job_hash, 0, 0);
        handshake(&mut forged, SocketType::Push, &claims)
            .await
            .unwrap();
        write_message(&mut forged, &[&hello.bytes]).await.unwrap();
        for step in 0..3u64 {
            for mb in 0..8u64 {
                let route = Route {
                    run_id: hello.run_id,
                    step,
                    microbatch: mb,
                    kind: Kind::Activation,
                };
                let (h, p) =
                    encode(route, TensorData::new(vec![1e3f32; 8 * 128], vec![8, 128])).unwrap();
                let _ = write_message(&mut forged, &[&h, &p]).await;
            }
        }
    }
    vec![huge, zmtp2, junk, forged]
}

/// An encoded hello from rank 0 to rank 1 of the job, with an unsigned challenge, and the
/// identity it claims.
struct Hello {
    bytes: Vec<u8>,
    run_id: u64,
    job_hash: u64,
}

fn stranger_hello(file: &str, run: &str) -> Hello {
    use brigade_engine::identity::parse_run_id;
    use brigade_engine::transport::net::{Control, ControlKind};
    // What the launchers plan from this topology: the job hash every hello carries.
    let hash = brigade_engine::job::load_input(file, &[], None)
        .unwrap()
        .0
        .hash;
    let run_id = parse_run_id(hash, Some(run));
    let c = Control::new(ControlKind::Hello, run_id, hash, 0);
    Hello {
        bytes: c.with_bytes(&[0x55; 48]).encode(),
        run_id,
        job_hash: hash,
    }
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
    let hello = secret.map(|_| stranger_hello(file, test));
    let held = rt.block_on(intrude(port_b + 2, hello));
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
        "without brigade's X-Brigade-Run",
        "exceeds this link's limit",
        "1 is ZMTP 2.0",
        "not a ZeroMQ peer",
    ] {
        assert!(err_b.contains(what), "stage 1 must log {what:?}:\n{err_b}");
    }
    drop(held);
    if secret.is_some() {
        for what in ["has not authenticated", "hello is not signed"] {
            assert!(err_b.contains(what), "stage 1 must log {what:?}:\n{err_b}");
        }
    }
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
    let port_b = 24_000 + (std::process::id() % 15_000) as u16 + 8 + 4;
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
    let port_b = 24_000 + (std::process::id() % 15_000) as u16 + 24 + 4;
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
