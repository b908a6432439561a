//! brigade's benchmarks live in `benches/benches/` (this library holds what several share): criterion benches
//! (`codec`, `planner`) and harness-less ones that print tables (`pipeline`, `step`,
//! `transport`, `allreduce`, `gemm_shapes`, `data`). Run them all with `cargo bench -p brigade-benches`, or one with
//! `cargo bench -p brigade-benches --bench pipeline`; the figures are in docs/performance.md.

/// GB/s per side when two threads per side swap `bytes` (rounded down to whole 4 MiB writes
/// above 4 MiB) over a Unix socket pair at once, as many times as make 64 MiB (the threads
/// started once, as a transport's are): the raw link a reduction's bytes are measured against,
/// on this host now.
pub fn raw_swap_gbps(bytes: usize) -> f64 {
    use std::io::{Read, Write};
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let chunk = (4 << 20).min(bytes).max(1);
    let message = bytes / chunk * chunk;
    let total = ((64 << 20) / message.max(1)).max(1) * message;
    let start = std::time::Instant::now();
    let side = |mut s: std::os::unix::net::UnixStream| {
        let mut w = s.try_clone().expect("a second handle");
        let writer = std::thread::spawn(move || {
            let buf = vec![1u8; chunk];
            for _ in 0..total / chunk {
                w.write_all(&buf).unwrap();
            }
        });
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; chunk];
            let mut got = 0;
            while got < total {
                got += s.read(&mut buf).unwrap();
            }
        });
        (writer, reader)
    };
    let (wa, ra) = side(a);
    let (wb, rb) = side(b);
    for t in [wa, ra, wb, rb] {
        t.join().unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64() / 1e9
}
