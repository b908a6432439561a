//! brigade's benchmarks live in `benches/benches/` (this library is empty): criterion benches
//! (`codec`, `planner`) and harness-less ones that print tables (`pipeline`, `step`,
//! `transport`, `allreduce`, `gemm_shapes`, `data`). Run them all with `cargo bench -p brigade-benches`, or one with
//! `cargo bench -p brigade-benches --bench pipeline`; the figures are in docs/performance.md.
