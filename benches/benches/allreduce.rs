//! brigade's all-reduce alone, no training around it: D rank processes (2, then 3) each run a
//! real `NetTransport` over `ipc://` and sum one bucket of f32 per round through
//! `Transport::reduce` (the ring, or the two-member swap for small buckets, as training picks
//! with `Algo::choose`), against the raw link — two threads per side swapping as many bytes
//! over a Unix socket pair at once — measured in the same run, after; and, where
//! `TORCH_PYTHON` names a Python with torch, against PyTorch's gloo `all_reduce` of the same
//! buffer between as many processes (what DDP's buckets go through,
//! `benches/torch/torch_allreduce_bench.py`).
//!
//! Each round starts with a one-value reduction all members wait for, so they begin the timed
//! one together; a member's time runs from handing the bucket over to holding the sum.
//! Per-rank bytes: what a member sends, 2·(D−1)/D of the bucket for the ring, all of it for a
//! swap. `cargo bench -p brigade-benches --bench allreduce` (`TORCH_PYTHON=…` to add gloo).

use brigade_benches::raw_swap_gbps;
use brigade_engine::allreduce::{Algo, Sum};
use brigade_engine::endpoints::{InRoute, Listen, OutPeer, RankLinks};
use brigade_engine::message::{Arrived, ReduceJob};
use brigade_engine::transport::Transport;
use brigade_engine::transport::net::{NetConfig, NetTransport};
use brigade_stages::codec::Kind;
use burn::prelude::Device;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bucket sizes, MiB: DDP's default is 25.
const SIZES_MIB: [usize; 4] = [1, 4, 25, 64];
const WARMUP: usize = 2;
const ROUNDS: usize = 15;

fn values(mib: usize) -> usize {
    (mib << 20) / 4
}

/// The largest segment any size sends: a whole swapped buffer or a ring's share.
fn max_segment(members: usize) -> usize {
    SIZES_MIB
        .iter()
        .map(|&m| match Algo::choose(m << 20, members) {
            Algo::Direct => values(m),
            Algo::Ring => values(m).div_ceil(members),
        })
        .max()
        .unwrap_or(1)
}

/// Member `me` of `members` listens for its ring predecessor and sends to its successor.
fn transport(dir: &Path, members: usize, me: usize) -> NetTransport {
    let endpoint = |i: usize| format!("ipc://{}/m{i}.ipc", dir.display());
    let (prev, next) = ((me + members - 1) % members, (me + 1) % members);
    let seg = max_segment(members);
    let links = RankLinks {
        listen: Some(Listen {
            endpoint: endpoint(me),
            routes: vec![InRoute {
                edge: 0,
                kind: Kind::Reduce,
                peer: prev,
                shape: vec![1, seg],
                max_bytes: seg as u64 * 4,
            }],
        }),
        out: vec![OutPeer {
            peer: next,
            endpoint: endpoint(next),
        }],
    };
    NetTransport::start(NetConfig {
        stage: me,
        run_id: 11,
        job_hash: 13,
        links,
        device: Device::flex(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(30),
        trace: false,
        keys: None,
    })
    .expect("transport starts")
}

/// Sums `data` with the other members (reduction `bucket` of `step`); the sum and the time.
fn reduce(
    t: &mut NetTransport,
    members: usize,
    me: usize,
    (step, bucket): (u64, u32),
    data: Vec<f32>,
) -> (Sum, f64) {
    let algo = Algo::choose(data.len() * 4, members);
    let start = Instant::now();
    let job = ReduceJob {
        edge: 0,
        bucket,
        step,
        ring: (0..members).collect(),
        me,
        algo,
        data,
    };
    t.reduce(job).expect("reduction starts");
    // Segments are taken inside `recv`: it returns once the sum is finished.
    match t.recv(Duration::from_secs(30)).expect("transport") {
        Some(Arrived::Reduced(r)) => (r.sum, start.elapsed().as_secs_f64()),
        Some(Arrived::Message(_)) => panic!("a message on a reduce-only link"),
        None => panic!("member {me}: no sum within 30 s"),
    }
}

/// Runs every size's rounds as member `me`; member 0 returns each round's seconds by size.
fn member(dir: &Path, members: usize, me: usize) -> Vec<Vec<f64>> {
    let mut t = transport(dir, members, me);
    let mut step = 0u64;
    let mut times = Vec::new();
    for mib in SIZES_MIB {
        let n = values(mib);
        let mine: Vec<f32> = (0..n).map(|j| (me + j % 7) as f32).collect();
        let mut secs = Vec::new();
        for round in 0..WARMUP + ROUNDS {
            step += 1;
            // The barrier: nobody holds its sum before every member has started.
            reduce(&mut t, members, me, (step, 0), vec![1.0]);
            let (sum, s) = reduce(&mut t, members, me, (step, 1), mine.clone());
            let want = |j: usize| (0..members).map(|m| (m + j % 7) as f32).sum::<f32>();
            assert!(
                [0, n / 2, n - 1]
                    .iter()
                    .all(|&j| sum.value(j) == Some(want(j))),
                "a wrong sum"
            );
            if round >= WARMUP {
                secs.push(s);
            }
        }
        times.push(secs);
    }
    t.finish().expect("transport finishes");
    times
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes member sends for a bucket of `mib`.
fn sent_bytes(mib: usize, members: usize) -> f64 {
    let bytes = (mib << 20) as f64;
    match Algo::choose(mib << 20, members) {
        Algo::Direct => bytes,
        Algo::Ring => bytes * 2.0 * (members - 1) as f64 / members as f64,
    }
}

/// gloo's per-size median seconds from the torch script, if a Python with torch is named.
fn gloo(members: usize) -> Option<Vec<f64>> {
    let py = std::env::var("TORCH_PYTHON").ok()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("torch/torch_allreduce_bench.py");
    let sizes: Vec<String> = SIZES_MIB.iter().map(|m| m.to_string()).collect();
    let out = Command::new(py)
        .arg(script)
        .args([
            "--members",
            &members.to_string(),
            "--rounds",
            &ROUNDS.to_string(),
        ])
        .args(["--warmup", &WARMUP.to_string(), "--mib"])
        .args(&sizes)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last()?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["median_s"]
        .as_array()?
        .iter()
        .map(serde_json::Value::as_f64)
        .collect()
}

fn run(members: usize) {
    let dir = std::env::temp_dir().join(format!("brigade-bench-allreduce-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let children: Vec<_> = (1..members)
        .map(|me| {
            Command::new(std::env::current_exe().unwrap())
                .env("BRIGADE_BENCH_ROLE", "member")
                .env("BRIGADE_BENCH_MEMBERS", members.to_string())
                .env("BRIGADE_BENCH_ME", me.to_string())
                .env("BRIGADE_BENCH_DIR", &dir)
                .spawn()
                .unwrap()
        })
        .collect();
    let times = member(&dir, members, 0);
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a member failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let gloo = gloo(members);
    println!("{members} members:");
    for (k, (mib, secs)) in SIZES_MIB.iter().zip(times).enumerate() {
        let sent = sent_bytes(*mib, members);
        let raw = median((0..5).map(|_| raw_swap_gbps(sent as usize)).collect());
        let s = median(secs);
        let gbps = sent / s / 1e9;
        let algo = Algo::choose(mib << 20, members).name();
        let gloo = gloo.as_ref().map_or("gloo: set TORCH_PYTHON".into(), |g| {
            format!(
                "gloo {:.2} ms ({:.2} GB/s): brigade/gloo {:.2}",
                g[k] * 1e3,
                sent / g[k] / 1e9,
                g[k] / s
            )
        });
        println!(
            "  {mib:>2} MiB ({algo}): {:.2} ms, {:.2} GB/s sent per rank; raw swap {raw:.2} GB/s per side: {:.2} of it; {gloo}",
            s * 1e3,
            gbps,
            gbps / raw
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    brigade_stages::alloc::tune(); // as every brigade process does
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("BRIGADE_BENCH_ROLE") == "member" {
        let members = env("BRIGADE_BENCH_MEMBERS").parse().unwrap();
        let me = env("BRIGADE_BENCH_ME").parse().unwrap();
        member(&PathBuf::from(env("BRIGADE_BENCH_DIR")), members, me);
        return;
    }
    println!(
        "all-reduce alone: {ROUNDS} timed rounds per size after {WARMUP} warm-up, median; {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for members in [2, 3] {
        run(members);
    }
}
