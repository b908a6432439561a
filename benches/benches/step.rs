//! One training step of `topologies/mlp-8x1024.toml` (8 × [linear 1024 + relu] + linear 10,
//! batch 256, SGD) on one core: as one batch, and as 8 micro-batches of 32 with gradient
//! accumulation — the compute of a stage without any pipeline around it.
//! `cargo bench -p brigade-benches --bench step`

use brigade_engine::reference::train;
use brigade_partitioner::load;
use brigade_stages::SyntheticData;
use brigade_stages::stage::Stage;
use burn::prelude::Device;
use std::time::Instant;

fn pin_to_one_core() {
    // SAFETY: sched_setaffinity on this process with a zeroed, then filled, cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn median_step_ms(microbatches: usize, steps: usize, batched: bool) -> f64 {
    let path = format!(
        "{}/../topologies/mlp-8x1024.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let topo = load(
        &path,
        &[
            format!("train.microbatches={microbatches}"),
            format!("train.batch_weight_grads={batched}"),
        ],
    )
    .expect("mlp-8x1024 topology");
    // The reference trainer: the executor running the whole model as one chunk.
    let mut times = Vec::new();
    train(&topo, steps + 2, &Device::flex(), |m| times.push(m.step_ms)).expect("steps");
    let mut times = times.split_off(2);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Where the 8-micro-batch step spends its time: forward, backward (with gradient
/// accumulation), optimizer.
fn breakdown(steps: usize, batched: bool) -> [f64; 3] {
    let path = format!(
        "{}/../topologies/mlp-8x1024.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let topo =
        load(&path, &[format!("train.batch_weight_grads={batched}")]).expect("mlp-8x1024 topology");
    let mut stage = Stage::new(&topo, 0, 0..topo.model.layers.len(), &Device::flex());
    let data = SyntheticData::new(&topo);
    let device = stage.device().clone();
    let mut acc = [0.0; 3];
    for i in 0..steps + 2 {
        let step = stage.step();
        let (mut f, mut b) = (0.0, 0.0);
        for mb in 0..8 {
            let x = data.inputs(step, mb, &device);
            let y = data.targets(step, mb, &device);
            let t = Instant::now();
            stage.forward(mb, x).expect("forward");
            f += t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            stage.backward_loss(mb, &y).expect("backward");
            b += t.elapsed().as_secs_f64() * 1e3;
        }
        let t = Instant::now();
        stage.optimizer_step().expect("step");
        let o = t.elapsed().as_secs_f64() * 1e3;
        if i >= 2 {
            acc[0] += f / steps as f64;
            acc[1] += b / steps as f64;
            acc[2] += o / steps as f64;
        }
    }
    acc
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness-less benches for their names
    }
    pin_to_one_core();
    brigade_stages::alloc::tune(); // as every brigade process does
    let one = median_step_ms(1, 7, false);
    println!("mlp-8x1024 training step on one core (burn flex, median of 7 after 2 warm-up steps)");
    println!("  batch 256 as one batch:                 {one:8.1} ms");
    for batched in [false, true] {
        let eight = median_step_ms(8, 7, batched);
        let how = if batched {
            "train.batch_weight_grads = true"
        } else {
            "weight gradients per micro-batch"
        };
        println!("  batch 256 as 8 micro-batches of 32:     {eight:8.1} ms   ({how})");
        let [f, b, o] = breakdown(5, batched);
        println!(
            "    of which (mean): forward {f:.1} ms, backward + gradient accumulation {b:.1} ms (batched: the weight products are in the optimizer's time), optimizer {o:.1} ms"
        );
    }
}
