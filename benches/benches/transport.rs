//! 4 MiB activations from one rank process to another over brigade's real transport path
//! (executor `Outgoing` → msgpack header + the tensor's own bytes → ZMTP 3.1 → decode → burn
//! tensor), over ipc:// and tcp:// (NULL) and tcp:// under a job secret (CURVE) on loopback,
//! against a raw TCP socket moving the same bytes in the same run — and libzmq (through pyzmq,
//! `benches/pyzmq_transport.py`, whose first line says how to install it) moving the same
//! messages PUSH→PULL with NULL and with CURVE, the modes alternating, each run twice.
//! `BRIGADE_PYTHON=/path/to/python cargo bench -p brigade-benches --bench transport`

use brigade_engine::endpoints::{InRoute, Listen, OutPeer, RankLinks};
use brigade_engine::executor::core::Outgoing;
use brigade_engine::transport::Transport;
use brigade_engine::transport::net::{JobKeys, NetConfig, NetTransport};
use brigade_stages::Act;
use brigade_stages::codec::Kind;
use burn::prelude::Device;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 5;
/// Timed rounds of `messages()` each (after one warm-up round); the median is reported.
const ROUNDS: u64 = 7;
/// Rows of 4096 f32 in a message: 8 (128 KiB), 256 (4 MiB), 2048 (32 MiB).
static ROWS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(256);

fn shape() -> [usize; 2] {
    [ROWS.load(std::sync::atomic::Ordering::Relaxed), 4096]
}

/// Bytes in one message.
fn bytes() -> usize {
    shape()[0] * shape()[1] * 4
}

/// Messages per round: ~240 MiB, at least 8.
fn messages() -> usize {
    ((240 << 20) / bytes()).max(8)
}

/// Rank 0 sends 4 MiB activations on edge 0 to rank 1, which acknowledges with gradients.
fn links(mode: &str, port: u16, dir: &std::path::Path, stage: usize) -> RankLinks {
    let (act, grad) = match mode {
        "ipc" => (
            format!("ipc://{}/act.ipc", dir.display()),
            format!("ipc://{}/grad.ipc", dir.display()),
        ),
        _ => (
            format!("tcp://127.0.0.1:{port}"),
            format!("tcp://127.0.0.1:{}", port + 1),
        ),
    };
    let (act_bytes, grad_bytes) = (shape().iter().product::<usize>() as u64 * 4, 4);
    let listen = |endpoint: String, kind, peer, shape: Vec<usize>, max_bytes| {
        Some(Listen {
            endpoint,
            routes: vec![InRoute {
                edge: 0,
                kind,
                peer,
                shape,
                max_bytes,
            }],
        })
    };
    if stage == 0 {
        RankLinks {
            listen: listen(grad, Kind::Gradient, 1, vec![1, 1], grad_bytes),
            out: vec![OutPeer {
                peer: 1,
                endpoint: act,
            }],
        }
    } else {
        RankLinks {
            listen: listen(act, Kind::Activation, 0, shape().to_vec(), act_bytes),
            out: vec![OutPeer {
                peer: 0,
                endpoint: grad,
            }],
        }
    }
}

fn transport(mode: &str, port: u16, dir: &std::path::Path, stage: usize) -> NetTransport {
    NetTransport::start(NetConfig {
        stage,
        run_id: 7,
        job_hash: 9,
        links: links(mode, port, dir, stage),
        device: Device::flex(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(30),
        trace: false,
        // "curve": tcp:// under a job secret, so CURVE boxes every frame.
        keys: (mode == "curve").then(|| JobKeys::from_secret(b"brigade transport bench secret")),
    })
    .expect("transport starts")
}

fn receiver(mode: &str, port: u16, dir: &std::path::Path) {
    let mut t = transport(mode, port, dir, 1);
    let ack = |t: &mut NetTransport, i: u64| {
        t.send(Outgoing {
            edge: 0,
            to: 0,
            kind: Kind::Gradient,
            step: 0,
            microbatch: i,
            tensor: Act::from_f32(vec![0.0], &[1, 1], &Device::flex()),
        })
        .unwrap()
    };
    for round in 0..=ROUNDS {
        let n = if round == 0 { WARMUP } else { messages() };
        for _ in 0..n {
            while t.recv(Duration::from_secs(30)).unwrap().is_none() {}
        }
        ack(&mut t, round);
    }
    t.finish().unwrap();
}

fn sender(mode: &str, port: u16, dir: &std::path::Path) -> Vec<f64> {
    let mut t = transport(mode, port, dir, 0);
    let n: usize = shape().iter().product();
    let act = Act::from_f32(
        (0..n).map(|i| i as f32).collect(),
        &shape(),
        &Device::flex(),
    );
    let mut rates = Vec::new();
    for round in 0..=ROUNDS {
        let count = if round == 0 { WARMUP } else { messages() };
        let start = Instant::now();
        for i in 0..count {
            t.send(Outgoing {
                edge: 0,
                to: 1,
                kind: Kind::Activation,
                step: 0,
                microbatch: i as u64,
                tensor: act.clone(),
            })
            .unwrap();
        }
        while t.recv(Duration::from_secs(60)).unwrap().is_none() {}
        if round > 0 {
            rates.push(gbps(start));
        }
    }
    t.finish().unwrap();
    rates
}

fn gbps(start: Instant) -> f64 {
    (messages() * bytes()) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn raw_receiver(port: u16) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; bytes()];
    for round in 0..=ROUNDS {
        let n = if round == 0 { WARMUP } else { messages() };
        for _ in 0..n {
            s.read_exact(&mut buf).unwrap();
        }
        s.write_all(&[1]).unwrap();
    }
}

fn raw_sender(port: u16) -> Vec<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let buf: Vec<u8> = (0..bytes()).map(|i| i as u8).collect();
    let mut rates = Vec::new();
    for round in 0..=ROUNDS {
        let n = if round == 0 { WARMUP } else { messages() };
        let start = Instant::now();
        for _ in 0..n {
            s.write_all(&buf).unwrap();
        }
        s.read_exact(&mut [0u8]).unwrap();
        if round > 0 {
            rates.push(gbps(start));
        }
    }
    rates
}

/// The zeromq crate alone: PUSH→PULL of the same 4 MiB frames, no brigade code.
fn zmq_raw(role: &str, port: u16) -> Vec<f64> {
    use zeromq::{PullSocket, PushSocket, Socket, SocketRecv, SocketSend, ZmqMessage};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (data, ack) = (
            format!("tcp://127.0.0.1:{port}"),
            format!("tcp://127.0.0.1:{}", port + 1),
        );
        let mut opts = zeromq::SocketOptions::default();
        opts.read_buffer(64 * 1024, 8 * 1024 * 1024, 2);
        if role == "recv" {
            let mut pull = PullSocket::with_options(opts);
            pull.bind(&data).await.unwrap();
            let mut push = PushSocket::new();
            push.connect(&ack).await.unwrap();
            for round in 0..=ROUNDS {
                let n = if round == 0 { WARMUP } else { messages() };
                for _ in 0..n {
                    let _ = pull.recv().await.unwrap();
                }
                push.send(ZmqMessage::from("ack")).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            Vec::new()
        } else {
            let mut pull = PullSocket::new();
            pull.bind(&ack).await.unwrap();
            let mut push = PushSocket::new();
            push.connect(&data).await.unwrap();
            let payload = bytes::Bytes::from((0..bytes()).map(|i| i as u8).collect::<Vec<u8>>());
            let mut rates = Vec::new();
            for round in 0..=ROUNDS {
                let n = if round == 0 { WARMUP } else { messages() };
                let start = Instant::now();
                for _ in 0..n {
                    push.send(ZmqMessage::from(payload.clone())).await.unwrap();
                }
                let _ = pull.recv().await.unwrap();
                if round > 0 {
                    rates.push(gbps(start));
                }
            }
            rates
        }
    })
}

/// libzmq through pyzmq: the same messages between two Python processes (`mech`: null or
/// curve); `None` when no Python with pyzmq is found.
fn libzmq(mech: &str, port: u16) -> Option<Vec<f64>> {
    let python = std::env::var("BRIGADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/pyzmq_transport.py");
    let args = |role: &str| {
        let mut c = Command::new(&python);
        c.arg(script).arg(role).arg(mech).arg(port.to_string());
        for n in [bytes(), messages(), ROUNDS as usize, WARMUP] {
            c.arg(n.to_string());
        }
        c
    };
    let mut recv = args("recv").stderr(Stdio::null()).spawn().ok()?;
    let out = args("send").stderr(Stdio::null()).output().ok();
    let _ = recv.wait();
    let rates: Vec<f64> = String::from_utf8_lossy(&out?.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (rates.len() == ROUNDS as usize).then_some(rates)
}

fn median(rates: &[f64]) -> f64 {
    let mut r = rates.to_vec();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

/// "median GB/s [min – max]" over the timed rounds.
fn spread(rates: &[f64]) -> String {
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    format!("{:5.2} GB/s [{lo:.2} – {hi:.2}]", median(rates))
}

fn spawn(role: &str, mode: &str, port: u16, dir: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env("BRIGADE_BENCH_ROLE", role)
        .env("BRIGADE_BENCH_MODE", mode)
        .env("BRIGADE_BENCH_PORT", port.to_string())
        .env("BRIGADE_BENCH_DIR", dir)
        .env("BRIGADE_BENCH_ROWS", shape()[0].to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    brigade_stages::alloc::tune(); // as every brigade process does
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if let Ok(rows) = env("BRIGADE_BENCH_ROWS").parse() {
        ROWS.store(rows, std::sync::atomic::Ordering::Relaxed);
    }
    let port: u16 = env("BRIGADE_BENCH_PORT").parse().unwrap_or(0);
    let dir = std::path::PathBuf::from(env("BRIGADE_BENCH_DIR"));
    match env("BRIGADE_BENCH_ROLE").as_str() {
        "receiver" => return receiver(&env("BRIGADE_BENCH_MODE"), port, &dir),
        "raw" => return raw_receiver(port),
        "zmqraw" => {
            zmq_raw("recv", port);
            return;
        }
        _ => {}
    }
    let dir = std::env::temp_dir().join(format!("brigade-bench-transport-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = 40_000 + (std::process::id() % 10_000) as u16;
    println!(
        "CURVE helper threads: {} (BRIGADE_CURVE_THREADS); {} cores",
        brigade_wire::zmtp::boxes::helpers().threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "transport: {ROUNDS} rounds of ~240 MiB of f32 [rows, 4096] messages between two processes, after {WARMUP} warm-up messages; median [min – max] over the rounds"
    );
    for (i, (rows, label)) in [(8usize, "128 KiB"), (256, "4 MiB"), (2048, "32 MiB")]
        .into_iter()
        .enumerate()
    {
        ROWS.store(rows, std::sync::atomic::Ordering::Relaxed);
        let port = base + 20 * i as u16;
        println!("{label} messages ({} per round):", messages());
        // Alternating: brigade CURVE, libzmq CURVE, brigade NULL, libzmq NULL, ipc; twice.
        let modes = ["curve", "zmq-curve", "tcp", "zmq-null", "ipc"];
        let mut results: Vec<(&str, Vec<f64>)> = modes.iter().map(|m| (*m, Vec::new())).collect();
        for rep in 0..2 {
            for (k, mode) in modes.iter().enumerate() {
                let p = port + 10 + 2 * k as u16 + 1000 * rep;
                let rates = match mode.strip_prefix("zmq-") {
                    Some(mech) => libzmq(mech, p).unwrap_or_default(),
                    None => {
                        let mut child = spawn("receiver", mode, p, &dir);
                        let r = sender(mode, p, &dir);
                        child.wait().unwrap();
                        r
                    }
                };
                results[k].1.extend(rates);
            }
        }
        let mut child = spawn("raw", "tcp", port + 4, &dir);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let raw = median(&raw_sender(port + 4));
        child.wait().unwrap();
        for (mode, rates) in &results {
            let label = match *mode {
                "curve" => "brigade tcp:// CURVE".to_string(),
                "zmq-curve" => "libzmq  tcp:// CURVE".to_string(),
                "zmq-null" => "libzmq  tcp:// NULL ".to_string(),
                m => format!("brigade {m}://      "),
            };
            if rates.is_empty() {
                println!("  {label}  skipped: no Python with pyzmq (see pyzmq_transport.py)");
                continue;
            }
            println!(
                "  {label} {}   {:.2} of raw TCP",
                spread(rates),
                median(rates) / raw
            );
        }
        let of = |a: &str, b: &str| {
            let m = |x| results.iter().find(|r| r.0 == x).map(|r| median(&r.1));
            match (m(a), m(b)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "-".into(),
            }
        };
        println!(
            "  brigade CURVE / libzmq CURVE {}; brigade CURVE / brigade NULL {}",
            of("curve", "zmq-curve"),
            of("curve", "tcp")
        );
        if rows == 256 {
            let mut child = spawn("zmqraw", "tcp", port + 6, &dir);
            let zmq = zmq_raw("send", port + 6);
            child.wait().unwrap();
            println!(
                "  zeromq 0.7 alone    {}   {:.2} of raw TCP (PUSH/PULL tcp://, no brigade code)",
                spread(&zmq),
                median(&zmq) / raw
            );
        }
        println!("  raw TCP socket      {raw:5.2} GB/s (median; the baseline)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
