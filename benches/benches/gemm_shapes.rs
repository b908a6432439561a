//! The matrix shapes of one linear layer of mlp-8x1024 on flex (gemm crate), one core: why a
//! micro-batch of 32 rows costs far more per FLOP than a batch of 256.
//! `cargo bench -p brigade-benches --bench gemm_shapes`

use burn::prelude::*;
use std::time::Instant;

fn time<F: FnMut() -> Tensor<2>>(name: &str, flops: f64, mut f: F) {
    for _ in 0..3 {
        let _ = f().into_data();
    }
    let n = 20;
    let start = Instant::now();
    for _ in 0..n {
        let _ = f().into_data();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!("  {name:<38} {ms:7.3} ms  {:6.1} GFLOP/s", flops / ms / 1e6);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let d = Device::flex();
    let rand = |s: [usize; 2]| Tensor::<2>::random(s, burn::tensor::Distribution::Default, &d);
    let (x, w, g, xb) = (
        rand([32, 1024]),
        rand([1024, 1024]),
        rand([32, 1024]),
        rand([256, 1024]),
    );
    let f32m = 2.0 * 32.0 * 1024.0 * 1024.0;
    println!("gemm shapes of a 1024x1024 linear layer (flex, f32):");
    time("forward  x[32,1024] @ W[1024,1024]", f32m, || {
        x.clone().matmul(w.clone())
    });
    time("dx       g[32,1024] @ W^T", f32m, || {
        g.clone().matmul(w.clone().swap_dims(0, 1))
    });
    time("dW       x^T @ g[32,1024]", f32m, || {
        x.clone().swap_dims(0, 1).matmul(g.clone())
    });
    time("forward  xb[256,1024] @ W (one batch)", 8.0 * f32m, || {
        xb.clone().matmul(w.clone())
    });
    // Other orientations of the same products (the issue of CPU speed: which one the kernel is
    // fastest at for these shapes). `wt` is the weight stored [out, in].
    let wt = w.clone().swap_dims(0, 1).into_data();
    let wt = Tensor::<2>::from_data(wt, &d);
    time("forward  (W^T @ x^T)^T, W^T a view", f32m, || {
        w.clone()
            .swap_dims(0, 1)
            .matmul(x.clone().swap_dims(0, 1))
            .swap_dims(0, 1)
    });
    time("forward  (Wt @ x^T)^T, Wt stored", f32m, || {
        wt.clone().matmul(x.clone().swap_dims(0, 1)).swap_dims(0, 1)
    });
    time("forward  x @ Wt^T, Wt stored", f32m, || {
        x.clone().matmul(wt.clone().swap_dims(0, 1))
    });
    time("dx       (W @ g^T)^T", f32m, || {
        w.clone().matmul(g.clone().swap_dims(0, 1)).swap_dims(0, 1)
    });
    time("dW       (g^T @ x)^T", f32m, || {
        g.clone().swap_dims(0, 1).matmul(x.clone()).swap_dims(0, 1)
    });
    time(
        "dW       xb^T @ gb (8 micro-batches at once)",
        8.0 * f32m,
        || xb.clone().swap_dims(0, 1).matmul(xb.clone()),
    );
    // Gradient accumulation adds one such sum per parameter tensor per micro-batch (7 per step).
    let mut acc = rand([1024, 1024]);
    let g2 = rand([1024, 1024]);
    let n = 20;
    let start = Instant::now();
    for _ in 0..n {
        acc = acc.add(g2.clone());
    }
    let _ = acc.into_data();
    let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    let gbs = 3.0 * 4.0 * 1024.0 * 1024.0 / ms / 1e6;
    println!(
        "  {:<38} {ms:7.3} ms  ({gbs:.1} GB/s of memory traffic)",
        "accumulate acc += g (1024x1024)"
    );
}
