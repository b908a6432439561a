//! End-to-end pipeline benchmark: real stage processes over brigade's socket transport on this host.
//!
//! For each topology and schedule it reports samples/s, the median step, each stage's compute
//! per micro-batch (from the trace), the ideal step the simulator gives for those measured costs
//! with free communication, efficiency = ideal / measured, each stage's measured bubble, and its
//! peak RSS — and the single-process reference on the same machine.
//! `cargo bench -p brigade-benches --bench pipeline`

use brigade_engine::job::load_input;
use brigade_engine::launcher::{LaunchSpec, launch};
use brigade_engine::reference::train;
use brigade_engine::sim::{ChunkCost, SimCosts, simulate};
use burn::prelude::Device;
use std::process::ExitCode;

struct Case {
    file: &'static str,
    schedule: &'static str,
    steps: u64,
    /// More `--set` overrides (e.g. fewer ranks).
    overrides: &'static [&'static str],
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn run(case: &Case, dir: &std::path::Path) {
    let path = format!(
        "{}/../topologies/{}",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"),
        case.file
    );
    let mut overrides = vec![format!("train.schedule={}", case.schedule)];
    overrides.extend(case.overrides.iter().map(|o| o.to_string()));
    let job = load_input(&path, &overrides, None).expect("topology").0;
    let topo = job.topo.clone();
    let k_total = job.ranks();
    let m = topo.train.microbatches;
    let (trace, metrics) = (dir.join("trace.json"), dir.join("metrics.jsonl"));
    let spec = LaunchSpec {
        file: path.clone(),
        job: job.clone(),
        stages: (0..k_total).map(|k| (k, "local".to_string())).collect(),
        total_stages: k_total,
        last_stage: job.chunk_rank[job.chunks().len() - 1],
        steps: case.steps,
        batch: topo.train.batch,
        run_id: brigade_engine::identity::fresh_run_id(),
        local: true,
        metrics: Some(metrics.to_string_lossy().into_owned()),
        append_metrics: false,
        trace: Some(trace.to_string_lossy().into_owned()),
        report: None,
        tracker: None,
        save_params: None,
        peer_timeout: 30,
        connect_timeout: 60,
        extra_args: vec![],
    };
    let report = launch(&spec).expect("the pipeline trains");
    let warm = 2; // steps excluded from every statistic
    let steps: Vec<f64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        // Evaluation lines carry no step time.
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step_ms"].as_f64())
        .skip(warm)
        .collect();
    let step_ms = median(steps);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events: Vec<&serde_json::Value> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["args"]["step"].as_u64().unwrap_or(0) >= warm as u64)
        .collect();
    let spans = |k: usize, name: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e["pid"] == k as u64 && e["name"] == name)
            .map(|e| e["dur"].as_f64().unwrap() / 1e3)
            .collect()
    };
    let mean = |k: usize, name: &str| {
        let d = spans(k, name);
        d.iter().sum::<f64>() / d.len().max(1) as f64
    };
    let counted = (case.steps as usize).saturating_sub(warm).max(1) as f64;
    // Compute per step on each rank, from the trace.
    let busy: Vec<f64> = (0..k_total)
        .map(|k| {
            ["forward", "backward", "backward_weight", "optimizer"]
                .iter()
                .map(|n| spans(k, n).iter().sum::<f64>())
                .sum::<f64>()
                / counted
        })
        .collect();
    // Chunk c's costs: the mean span on the rank that holds it (a rank's chunks are of about
    // one size); free communication.
    let chunks = job.chunks().len();
    let mut ideal_costs = SimCosts::uniform_chain(chunks, 0.0, 0.0);
    for e in 0..job.edges().len() {
        let ends = job.ends(e);
        ideal_costs.edges[e].producer = ends.producer;
        ideal_costs.edges[e].consumer = ends.consumer;
    }
    // Replicas are symmetric: replica 0's ranks are simulated (free communication, so its
    // all-reduce costs nothing in the ideal).
    let k_rep = job.ranks_per_replica();
    // W per micro-batch: ZB-H1 traces one W a micro-batch, batched weight gradients one a
    // step (or a gradient bucket): the step's W over the rank's micro-batches either way.
    let w_per_mb = |k: usize| {
        let mbs = (m / job.replicas()) * job.plan.ranks[k].chunks.len();
        spans(k, "backward_weight").iter().sum::<f64>() / counted / mbs.max(1) as f64
    };
    let costs: Vec<ChunkCost> = (0..k_rep)
        .map(|k| ChunkCost {
            forward_ms: mean(k, "forward"),
            backward_ms: mean(k, "backward") + w_per_mb(k),
            input_backward_ms: mean(k, "backward"),
            weight_ms: w_per_mb(k),
            optimizer_ms: mean(k, "optimizer"),
            allreduce_ms: 0.0,
        })
        .collect();
    for (c, &r) in job.chunk_rank.iter().enumerate() {
        ideal_costs.chunks[c] = costs[r];
    }
    let ideal = simulate(&job.instructions[..k_rep], &ideal_costs).expect("the schedule runs");
    let d = job.replicas();
    let mut ref_times = Vec::new();
    train(&topo, (case.steps as usize).min(12), &Device::flex(), |s| {
        ref_times.push(s.step_ms)
    })
    .expect("reference");
    let ref_ms = median(ref_times.into_iter().skip(warm).collect());

    println!(
        "\n{} ({} ranks, {} chunks, {} micro-batches of {}), {}:",
        case.file,
        k_total,
        chunks,
        m,
        topo.train.microbatch_size(),
        case.schedule
    );
    println!(
        "  measured step (median)     {step_ms:9.2} ms   {:8.0} samples/s",
        topo.train.batch as f64 / step_ms * 1e3
    );
    println!(
        "  ideal step (simulated)     {:9.2} ms   measured costs, free communication",
        ideal.step_ms
    );
    println!(
        "  efficiency ideal/measured  {:9.3}",
        ideal.step_ms / step_ms
    );
    println!(
        "  reference (1 process)      {ref_ms:9.2} ms   {:8.0} samples/s",
        topo.train.batch as f64 / ref_ms * 1e3
    );
    if d > 1 {
        reductions(&events, &job);
    }
    for (k, c) in costs.iter().enumerate() {
        let rss = report
            .peak_rss_kib
            .iter()
            .find(|(s, _)| *s == k)
            .map_or(0, |(_, r)| *r);
        let w = if c.weight_ms > 0.0 {
            format!(" (B {:.3} + W {:.3})", c.input_backward_ms, c.weight_ms)
        } else {
            String::new()
        };
        println!(
            "  rank {k}: fwd {:7.3} ms + bwd {:7.3} ms{w} per chunk and micro-batch, bubble {:5.1}% measured ({:5.1}% ideal), peak live {}, peak RSS {:6.1} MiB",
            c.forward_ms,
            c.backward_ms,
            (1.0 - busy[k] / step_ms) * 100.0,
            ideal.stages[k].bubble_fraction * 100.0,
            ideal.stages[k].peak_live_microbatches,
            rss as f64 / 1024.0
        );
    }
}

/// Each chunk's all-reduce on the rank holding it in replica 0, per step: its buckets, the
/// bytes it sent, and the time from the moment every replica had handed over its first bucket
/// (the later replica's backward is not the link's time) to this rank's last sum — against two
/// threads swapping as many bytes over a Unix socket pair on this host now.
fn reductions(events: &[&serde_json::Value], job: &brigade_engine::job::Job) {
    for (c, &r) in job.chunk_rank.iter().enumerate() {
        let members: Vec<usize> = job.chunk_ranks.iter().map(|ranks| ranks[c]).collect();
        let of = |rank: usize| {
            events
                .iter()
                .filter(move |e| {
                    e["pid"] == rank as u64
                        && e["name"] == "allreduce"
                        && e["args"]["edge"] == c as u64
                })
                .map(|e| {
                    let ts = e["ts"].as_u64().unwrap();
                    let end = ts + e["dur"].as_u64().unwrap();
                    (e["args"]["step"].as_u64().unwrap(), ts, end, e)
                })
        };
        let d = job.replicas() as f64;
        let mut by_step: std::collections::BTreeMap<u64, (u64, u64, f64, usize)> =
            Default::default();
        for (step, ts, end, e) in of(r) {
            let bytes = e["args"]["bytes"].as_u64().unwrap_or(0) as f64;
            // What this member sends: a ring 2·(D−1)/D of the bucket, a swap all of it.
            let sent = if e["args"]["algo"] == "ring" {
                bytes * 2.0 * (d - 1.0) / d
            } else {
                bytes
            };
            let s = by_step.entry(step).or_insert((u64::MAX, 0, 0.0, 0));
            *s = (s.0.min(ts), s.1.max(end), s.2 + sent, s.3 + 1);
        }
        // The step's reduction starts for the link when its last member starts.
        for &m in &members {
            let mut first: std::collections::BTreeMap<u64, u64> = Default::default();
            for (step, ts, _, _) in of(m) {
                let f = first.entry(step).or_insert(ts);
                *f = (*f).min(ts);
            }
            for (step, ts) in first {
                if let Some(s) = by_step.get_mut(&step) {
                    s.0 = s.0.max(ts);
                }
            }
        }
        let n = by_step.len().max(1) as f64;
        let ms = by_step
            .values()
            .map(|s| s.1.saturating_sub(s.0) as f64 / 1e3)
            .sum::<f64>()
            / n;
        let sent = by_step.values().map(|s| s.2).sum::<f64>() / n;
        let buckets = by_step.values().map(|s| s.3).sum::<usize>() as f64 / n;
        // The best of three: the machine is noisy, and the link is what it can do.
        let raw = (0..3)
            .map(|_| brigade_benches::raw_swap_gbps(sent as usize))
            .fold(0.0, f64::max);
        println!(
            "  all-reduce chunk {c} (rank {r}): {buckets:.0} bucket(s), {:.1} MiB sent in {ms:.2} ms once every replica started = {:.2} GB/s per rank; raw swap of as many bytes {raw:.2} GB/s per side: {:.2} of it",
            sent / (1 << 20) as f64,
            sent / (ms / 1e3) / 1e9,
            sent / (ms / 1e3) / 1e9 / raw
        );
    }
}

fn main() -> ExitCode {
    // The launcher starts stages by re-running this executable as `… stage FILE --stage K`.
    // `… train FILE` runs brigade's own command (to trace a case by hand with this build).
    if matches!(std::env::args().nth(1).as_deref(), Some("stage" | "train")) {
        return brigade_engine::cli::main();
    }
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    brigade_stages::alloc::tune(); // the in-process reference runs like a brigade process
    let dir = std::env::temp_dir().join(format!("brigade-bench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "pipeline benchmark: every stage a process on this host, ipc:// (Unix sockets), compute threads per stage: 1 (flex, no rayon)"
    );
    let mut cases = Vec::new();
    for schedule in ["gpipe", "1f1b"] {
        cases.push(Case {
            file: "quickstart.toml",
            schedule,
            steps: 60,
            overrides: &[],
        });
    }
    // Every schedule on the benchmark MLP and on the transformer LM (on 2 ranks: this host has
    // 2 cores, and a rank computes on one).
    for schedule in ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1"] {
        cases.push(Case {
            file: "mlp-8x1024.toml",
            schedule,
            steps: 12,
            overrides: &[],
        });
        cases.push(Case {
            file: "transformer-lm.toml",
            schedule,
            steps: 30,
            overrides: &[
                r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu"]}]"#,
                "partition.stages=2",
            ],
        });
    }
    // Weight gradients batched over the step (the CPU-speed setting, docs/performance.md).
    for schedule in ["gpipe", "1f1b"] {
        cases.push(Case {
            file: "mlp-8x1024.toml",
            schedule,
            steps: 12,
            overrides: &["train.batch_weight_grads=true"],
        });
    }
    // Data and pipeline parallelism: two replicas of a two-stage pipeline (four ranks on two
    // cores: each rank gets half a core, which the efficiency below includes).
    cases.push(Case {
        file: "mlp-8x1024.toml",
        schedule: "1f1b",
        steps: 12,
        overrides: &[
            r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu","cpu","cpu"]}]"#,
            "partition.replicas=2",
        ],
    });
    // Pure data parallelism: two replicas of the whole model, batch 256 as one micro-batch of
    // 128 rows each (the DDP comparison's shape, benches/torch/ddp_compare.sh).
    cases.push(Case {
        file: "mlp-8x1024.toml",
        schedule: "gpipe",
        steps: 12,
        overrides: &[
            "partition.replicas=2",
            "partition.stages=1",
            "train.microbatches=2",
        ],
    });
    // `cargo bench --bench pipeline -- WORD` runs only the cases whose description holds WORD.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for case in cases {
        let what = format!(
            "{} {} {}",
            case.file,
            case.schedule,
            case.overrides.join(" ")
        );
        if filter.as_ref().is_none_or(|f| what.contains(f.as_str())) {
            run(&case, &dir);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
