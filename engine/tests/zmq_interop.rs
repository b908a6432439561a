//! Real ZeroMQ peers on brigade's links: libzmq (through pyzmq) PUSHes activations into a
//! running rank and PULLs the gradients it sends back — ZMTP 3.1, NULL, on loopback. Python is
//! `$BRIGADE_PYTHON` (else `python3`); where it lacks pyzmq the tests skip, saying so on stderr,
//! and fail under `CI=true` (`.ci/run` installs pyzmq in a venv and points `BRIGADE_PYTHON` at it).

mod common;

use brigade_engine::identity::parse_run_id;
use brigade_engine::job::load_input;
use brigade_stages::codec::{Kind, Route, encode};
use burn::tensor::TensorData;
use common::*;
use std::process::{Command, Stdio};

fn pyzmq() -> bool {
    python_has("import zmq")
}

/// Plays rank 0 with pyzmq: binds a PULL where rank 0 receives gradients, connects a PUSH
/// (announcing itself as rank 0 in ZMTP metadata) to rank 1's activation endpoint, sends every
/// message given as hex on stdin, and prints the sizes of the two-frame messages it receives.
const RANK0: &str = r#"
import sys, zmq
run, job, act, grad, want = sys.argv[1:6]
keys = sys.argv[6:]  # under a job secret: server public, server secret, client public, client secret (Z85)
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
if keys:
    pull.curve_server = True
    pull.curve_publickey, pull.curve_secretkey = keys[0].encode(), keys[1].encode()
pull.setsockopt(zmq.RCVTIMEO, 30000)
pull.setsockopt(zmq.LINGER, 0)
for prop in (b"X-Brigade-Run:" + run.encode(), b"X-Brigade-Job:" + job.encode(), b"X-Brigade-Rank:0"):
    pull.setsockopt(zmq.METADATA, prop)
pull.bind(grad)
push = ctx.socket(zmq.PUSH)
push.setsockopt(zmq.LINGER, 5000)
if keys:
    push.curve_serverkey = keys[0].encode()
    push.curve_publickey, push.curve_secretkey = keys[2].encode(), keys[3].encode()
for prop in (b"X-Brigade-Run:" + run.encode(), b"X-Brigade-Job:" + job.encode(), b"X-Brigade-Rank:0"):
    push.setsockopt(zmq.METADATA, prop)
push.connect(act)
for line in sys.stdin:
    frames = [bytes.fromhex(f) for f in line.split()]
    push.send_multipart(frames)
sizes = []
while len(sizes) < int(want):
    msg = pull.recv_multipart()
    if len(msg) == 2:  # a tensor (header, payload); a one-frame message is brigade's bye
        sizes.append(len(msg[1]))
print("gradients", len(sizes), sorted(set(sizes)))
push.close()
pull.close()
ctx.term()
"#;

#[test]
fn pyzmq_push_feeds_a_rank_and_pyzmq_pull_taps_its_gradients() {
    interop("zmq-interop", 0, None);
}

#[test]
fn under_a_job_secret_pyzmq_joins_with_the_keys_brigade_keys_prints() {
    interop(
        "zmq-interop-curve",
        10,
        Some("a job secret for the CURVE interop test"),
    );
}

/// The keys `brigade keys` prints for `secret`: server public and secret, client public and
/// secret (Z85).
fn job_keys(secret: &str) -> Vec<String> {
    let out = brigade()
        .arg("keys")
        .env("BRIGADE_SECRET", secret)
        .env_remove("BRIGADE_SECRET_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let keys: Vec<String> = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 4, "{text}");
    assert!(keys.iter().all(|k| k.len() == 40), "{text}");
    keys
}

/// Rank 1 of `file` for one step, run "interop", under `secret` if given.
fn spawn_rank1(file: &str, secret: Option<&str>) -> std::process::Child {
    let mut rank1 = brigade();
    match secret {
        Some(s) => rank1.env("BRIGADE_SECRET", s),
        None => rank1.env_remove("BRIGADE_SECRET"),
    };
    rank1
        .env_remove("BRIGADE_SECRET_FILE")
        .args([
            "stage", file, "--stage", "1", "--steps", "1", "--run-id", "interop",
        ])
        .args(["--connect-timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn interop(test: &str, offset: u16, secret: Option<&str>) {
    if !pyzmq() {
        let how =
            "pip install pyzmq into a venv and set BRIGADE_PYTHON to its python; .ci/run does";
        skip_or_fail(test, &format!("pyzmq (in {})", python()), how);
        return;
    }
    let port = test_port(offset);
    let file = two_host_topology(test, port, "127.0.0.1", port + 4);
    let job = load_input(&file, &[], None).unwrap().0;
    let run_id = parse_run_id(job.hash, Some("interop"));
    // Rank r listens at its host's port + r: rank 1 (host b) for edge 0's activations, rank 0
    // (host a) for its gradients.
    let (act, grad) = (
        format!("tcp://127.0.0.1:{}", port + 4 + 1),
        format!("tcp://127.0.0.1:{port}"),
    );
    let m = job.plan.microbatches as u64;
    let shape = job.edges()[0].shape.clone();
    let mut messages = String::new();
    for mb in 0..m {
        let (h, p) = activation(run_id, mb, &shape, 0.5);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        messages += &format!("{} {}\n", hex(&h), hex(&p));
    }

    let rank1 = spawn_rank1(&file, secret);
    let mut py = Command::new(python())
        .args([
            "-c",
            RANK0,
            &format!("{run_id:016x}"),
            &job.hash_hex(),
            &act,
            &grad,
            &m.to_string(),
        ])
        .args(secret.map(job_keys).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        py.stdin
            .take()
            .unwrap()
            .write_all(messages.as_bytes())
            .unwrap();
    }
    let py = py.wait_with_output().unwrap();
    let out1 = rank1.wait_with_output().unwrap();
    let (py_out, py_err) = (
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr),
    );
    assert!(
        py.status.success(),
        "pyzmq rank 0 failed:\n{py_out}\n{py_err}\nrank 1:\n{}",
        stderr(&out1)
    );
    let grad_bytes = shape.iter().product::<usize>() * 4;
    assert_eq!(
        py_out.trim(),
        format!("gradients {m} [{grad_bytes}]"),
        "rank 1:\n{}",
        stderr(&out1)
    );
    assert!(out1.status.success(), "rank 1 failed:\n{}", stderr(&out1));
    let events = String::from_utf8_lossy(&out1.stdout);
    let step = events
        .lines()
        .find(|l| l.contains(r#""event":"step""#))
        .unwrap_or_else(|| panic!("no step event:\n{events}"));
    let v: serde_json::Value = serde_json::from_str(step).unwrap();
    assert!(v["loss"].as_f64().is_some_and(f64::is_finite), "{step}");
}

/// The `zeromq` crate (a second, pure-Rust ZeroMQ) plays rank 0: its PUSH names itself with a
/// socket identity (the only READY property it can set) and feeds rank 1; its PULL receives the
/// gradients rank 1 sends. Runs everywhere: no Python needed.
#[test]
fn zeromq_crate_push_feeds_a_rank_and_its_pull_receives_the_gradients() {
    use zeromq::{
        PullSocket, PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage,
    };
    let port = test_port(20);
    let file = two_host_topology("zmq-crate", port, "127.0.0.1", port + 4);
    let job = load_input(&file, &[], None).unwrap().0;
    let run_id = parse_run_id(job.hash, Some("interop"));
    let m = job.plan.microbatches as u64;
    let shape = job.edges()[0].shape.clone();
    let rank1 = spawn_rank1(&file, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gradients = rt.block_on(async {
        // Rank 0's endpoint (host a's port + 0), where rank 1 sends gradients.
        let mut pull = PullSocket::new();
        pull.bind(&format!("tcp://127.0.0.1:{port}")).await.unwrap();
        let mut opts = SocketOptions::default();
        opts.peer_identity(
            format!("brigade/{run_id:016x}/{}/0", job.hash_hex())
                .parse()
                .unwrap(),
        );
        let mut push = PushSocket::with_options(opts);
        let act = format!("tcp://127.0.0.1:{}", port + 4 + 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while push.connect(&act).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rank 1 never listened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for mb in 0..m {
            let (h, p) = activation(run_id, mb, &shape, 0.25);
            let mut msg = ZmqMessage::from(h);
            msg.push_back(p.into());
            push.send(msg).await.unwrap();
        }
        let mut sizes = Vec::new();
        while (sizes.len() as u64) < m {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(30), pull.recv())
                .await
                .expect("gradients within 30 s")
                .unwrap();
            if msg.len() == 2 {
                sizes.push(msg.get(1).unwrap().len());
            }
        }
        sizes
    });
    let out1 = rank1.wait_with_output().unwrap();
    assert!(out1.status.success(), "rank 1 failed:\n{}", stderr(&out1));
    assert_eq!(
        gradients,
        vec![shape.iter().product::<usize>() * 4; m as usize]
    );
}

/// Header and payload frames of micro-batch `mb`'s activation on edge 0, every value `v`.
fn activation(run_id: u64, mb: u64, shape: &[usize], v: f32) -> (Vec<u8>, Vec<u8>) {
    let route = Route {
        run_id,
        step: 0,
        microbatch: mb,
        kind: Kind::Activation,
        edge: 0,
    };
    let n: usize = shape.iter().product();
    let (h, p) = encode(route, TensorData::new(vec![v; n], shape.to_vec())).unwrap();
    (h.to_vec(), p.to_vec())
}
