//! Encodes and decodes a 4 MiB f32 activation (header + raw payload).
//! `cargo bench -p brigade-benches --bench codec`

use brigade_stages::codec::{Kind, Route, decode, encode};
use burn::tensor::TensorData;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let n = 1024 * 1024; // 4 MiB of f32
    let data = TensorData::new(
        (0..n).map(|i| i as f32 * 1e-3).collect::<Vec<f32>>(),
        vec![256, 4096],
    );
    let route = Route {
        run_id: 1,
        step: 0,
        microbatch: 0,
        kind: Kind::Activation,
        edge: 0,
    };
    let mut g = c.benchmark_group("codec 4 MiB f32");
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function("encode", |b| {
        b.iter(|| encode(route, black_box(data.clone())).unwrap())
    });
    let (header, payload) = encode(route, data.clone()).unwrap();
    g.bench_function("decode", |b| {
        b.iter(|| decode(black_box(&header), payload.clone(), u64::MAX).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
