//! Times the exact `auto` partitioner at 10,000 layers onto 64 stages.
//! `cargo bench -p brigade-benches --bench planner`

use brigade_partitioner::partition::{self, Problem, StageSlot};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn problem(n: usize, k: usize) -> Problem {
    // Uneven, deterministic per-layer costs and heterogeneous devices: a realistic worst case
    // for the pruning (no two stages alike).
    let slots = (0..k)
        .map(|i| StageSlot {
            speed_gflops: 10.0 + (i % 4) as f64 * 5.0,
            memory_bytes: Some(2_000_000_000),
            live_microbatches: (k - i) as u64,
            param_factor: 3,
            send_next: (1e-6, 0.01),
            send_prev: (1e-6, 0.01),
            recompute: false,
        })
        .collect();
    Problem {
        work: (0..n).map(|i| 1.0 + ((i * 7919) % 13) as f64).collect(),
        recompute_work: vec![0.0; n],
        graph: None,
        deferred: None,
        param_bytes: (0..n)
            .map(|i| 100_000 + ((i * 104_729) % 50_000) as u64)
            .collect(),
        saved_bytes: vec![50_000; n],
        cut_bytes: (0..=n)
            .map(|i| {
                if i == 0 || i == n {
                    0
                } else {
                    4096 + (i % 3) as u64 * 1024
                }
            })
            .collect(),
        slots,
    }
}

fn bench(c: &mut Criterion) {
    let p = problem(10_000, 64);
    c.bench_function("auto 10000 layers -> 64 stages", |b| {
        b.iter(|| partition::auto(black_box(&p)).unwrap())
    });
    let params = p.param_bytes.clone();
    c.bench_function("parameters 10000 layers -> 64 stages", |b| {
        b.iter(|| partition::parameters(black_box(&params), 64).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
