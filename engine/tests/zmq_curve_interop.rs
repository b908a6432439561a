//! brigade's CURVE (RFC 26) against libzmq's, through pyzmq: a libzmq CURVE client PUSHes to
//! brigade's CURVE server, and brigade's CURVE client PUSHes to a libzmq CURVE server, with
//! heartbeats inside the boxes. Python is `$BRIGADE_PYTHON` (else `python3`); where it lacks
//! pyzmq with CURVE the tests skip, saying so on stderr, and fail under `CI=true`.

mod common;

use brigade_wire::zmtp::curve::KeyPair;
use brigade_wire::zmtp::io::{
    Inbound, Mechanism, handshake_with, read_boxed, write_boxed, write_boxed_command,
};
use brigade_wire::zmtp::{Command, SocketType};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};

/// Whether pyzmq with CURVE is there; if not, skips (or fails under CI) and says so.
fn pyzmq(test: &str) -> bool {
    if common::python_has("import zmq; assert zmq.has('curve')") {
        return true;
    }
    let missing = format!("pyzmq with CURVE (in {})", common::python());
    let how = "pip install pyzmq into a venv and set BRIGADE_PYTHON to its python; .ci/run does";
    common::skip_or_fail(test, &missing, how);
    false
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const CLIENT: &str = r#"
import sys, time, zmq
port, cpub, csec, spub = sys.argv[1:5]
s = zmq.Context().socket(zmq.PUSH)
s.curve_publickey, s.curve_secretkey, s.curve_serverkey = (bytes.fromhex(k) for k in (cpub, csec, spub))
s.setsockopt(zmq.HEARTBEAT_IVL, 50)
s.setsockopt(zmq.LINGER, 5000)
s.connect(f"tcp://127.0.0.1:{port}")
s.send_multipart([b"header", bytes(range(256)) * 400])
time.sleep(0.4)  # long enough for a few PINGs
s.send_multipart([b"bye"])
s.close()
"#;

#[test]
fn libzmq_curve_client_to_brigade_curve_server() {
    if !pyzmq("libzmq_curve_client_to_brigade_curve_server") {
        return;
    }
    let (server, client) = (KeyPair::from_secret([5; 32]), KeyPair::from_secret([6; 32]));
    rt().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let py = Process::new(common::python())
            .args([
                "-c",
                CLIENT,
                &port.to_string(),
                &hex(&client.public),
                &hex(&client.secret),
                &hex(&server.public),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mech = Mechanism::CurveServer {
            long: server.clone(),
            allowed: vec![client.public],
        };
        let (meta, session) = handshake_with(&mut conn, SocketType::Pull, &Vec::new(), &mech)
            .await
            .unwrap();
        assert!(meta.iter().any(|(k, v)| k == "Socket-Type" && v == b"PUSH"));
        let (mut seal, mut open) = session.unwrap().split();
        let mut messages = Vec::new();
        let mut pings = 0;
        while messages.len() < 2 {
            match read_boxed(&mut conn, 1 << 20, 3, &mut open).await.unwrap() {
                Inbound::Message(m) => messages.push(m),
                Inbound::Command(Command::Ping { context, .. }) => {
                    pings += 1;
                    write_boxed_command(&mut conn, &Command::Pong { context }, &mut seal)
                        .await
                        .unwrap();
                }
                Inbound::Command(_) => {}
            }
        }
        assert_eq!(&messages[0][0][..], b"header");
        let want: Vec<u8> = (0..400).flat_map(|_| 0..=255u8).collect();
        assert_eq!(&messages[0][1][..], &want[..]);
        assert_eq!(&messages[1][0][..], b"bye");
        assert!(pings > 0, "libzmq's heartbeats arrive boxed");
        drop(conn);
        let out = py.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

const SERVER: &str = r#"
import sys, zmq
spub, ssec = sys.argv[1:3]
s = zmq.Context().socket(zmq.PULL)
s.curve_server = True
s.curve_publickey, s.curve_secretkey = bytes.fromhex(spub), bytes.fromhex(ssec)
s.setsockopt(zmq.RCVTIMEO, 20000)
port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
a = s.recv_multipart()
b = s.recv_multipart()
print("got", [len(f) for f in a], a[0].decode(), [f.decode() for f in b], flush=True)
"#;

#[test]
fn brigade_curve_client_to_libzmq_curve_server() {
    if !pyzmq("brigade_curve_client_to_libzmq_curve_server") {
        return;
    }
    let (server, client) = (KeyPair::from_secret([7; 32]), KeyPair::from_secret([8; 32]));
    let mut py = Process::new(common::python())
        .args(["-c", SERVER, &hex(&server.public), &hex(&server.secret)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut port = String::new();
    out.read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().unwrap();
    rt().block_on(async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mech = Mechanism::CurveClient {
            long: client,
            server: server.public,
        };
        let (meta, session) = handshake_with(&mut conn, SocketType::Push, &Vec::new(), &mech)
            .await
            .unwrap();
        assert!(meta.iter().any(|(k, v)| k == "Socket-Type" && v == b"PULL"));
        let mut session = session.unwrap();
        let big = vec![9u8; 300_000];
        write_boxed(&mut conn, &[b"header", &big], &mut session)
            .await
            .unwrap();
        write_boxed(&mut conn, &[b"end"], &mut session)
            .await
            .unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), r#"got [6, 300000] header ['end']"#);
    });
    let _ = py.stdin.take().map(|mut s| s.flush());
    let status = py.wait().unwrap();
    assert!(status.success());
}
