//! Only processes with the job secret take part: a wrong secret is refused (and logged with the
//! peer's address), forged frames from an intruder are dropped without changing the result,
//! and without a secret stages refuse to listen beyond loopback.

mod common;

use brigade_stages::codec::{Kind, Route, encode};
use burn::tensor::TensorData;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};
use zeromq::{PushSocket, Socket, SocketSend, ZmqMessage};

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
        both.contains("connections from: tcp://127.0.0.1:"),
        "refusal must log the peer's address:\n{both}"
    );
}

#[test]
fn forged_frames_from_an_intruder_are_dropped() {
    let file = topology("auth-intruder", 8, "127.0.0.1");
    let secret = "job-secret-for-the-intruder-test";
    let port_b = 24_000 + (std::process::id() % 15_000) as u16 + 8 + 4;
    let dir = tmp("auth-intruder-out");
    let (mb, rm) = (dir.join("b.jsonl"), dir.join("ref.jsonl"));
    let launch = |host: &str, metrics: Option<&std::path::Path>| {
        let mut c = brigade();
        c.args([
            "launch",
            &file,
            "--host",
            host,
            "--steps",
            "300",
            "--run-id",
            "intruder-test",
        ])
        .env("BRIGADE_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(m) = metrics {
            c.arg("--metrics").arg(m);
        }
        c.spawn().unwrap()
    };
    let a = launch("a", None);
    let b = launch("b", Some(&mb));
    // The intruder: connects to stage 1's activation port and sends well-formed tensors of the
    // right shape for every micro-batch of the first steps.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sock = PushSocket::new();
        let endpoint = format!("tcp://127.0.0.1:{}", port_b + 2);
        let deadline = Instant::now() + Duration::from_secs(20);
        while sock.connect(&endpoint).await.is_err() {
            assert!(Instant::now() < deadline, "stage 1 never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for step in 0..3u64 {
            for mb in 0..8u64 {
                let route = Route {
                    run_id: 0,
                    step,
                    microbatch: mb,
                    kind: Kind::Activation,
                };
                let (h, p) =
                    encode(route, TensorData::new(vec![1e3f32; 8 * 128], vec![8, 128])).unwrap();
                let mut msg = ZmqMessage::from(bytes::Bytes::from(h));
                msg.push_back(bytes::Bytes::from(p));
                let _ = tokio::time::timeout(Duration::from_secs(1), sock.send(msg)).await;
            }
        }
        // The socket writes in background tasks of this runtime: let them run.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        oa.status.success() && ob.status.success(),
        "the job must survive the intruder:\n{}\n{}",
        stderr(&oa),
        stderr(&ob)
    );
    assert!(
        stderr(&ob).contains("refused a message"),
        "stage 1 must log the refusal:\n{}",
        stderr(&ob)
    );
    assert!(
        run(&[
            "reference",
            &file,
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
        "forged frames changed the training"
    );
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
