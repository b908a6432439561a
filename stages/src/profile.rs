//! `brigade profile`: measured per-layer costs in the format the planner reads.

use crate::act::Act;
use crate::precision::{compute_module, float_dtype};
use brigade_layers::WeightGrads;
use brigade_layers::imp::{Forward, ForwardCtx};
use brigade_partitioner::{LayerKind, Profile, ProfiledLayer, Topology};
use burn::prelude::*;
use burn::tensor::ProfileOptions;
use rand::Rng;

/// Times every layer of `topo`'s model on `device` at the topology's micro-batch size:
/// `warmup` untimed runs, then the median of `repeats` forward and backward passes.
pub fn profile(topo: &Topology, device: &Device, warmup: usize, repeats: usize) -> Profile {
    let device = device.clone().autodiff();
    let graph = topo.model.graph();
    let mbs = topo.train.microbatch_size();
    let dtype = float_dtype(topo.train.dtype);
    let layers = (0..graph.len())
        .map(|i| {
            let node = graph.layer(i);
            let master = node
                .kind
                .init(&node.input_shape, topo.train.seed, i, &device);
            let mut shape = vec![mbs];
            shape.extend_from_slice(&node.input_shape);
            let mut fwd = Vec::with_capacity(repeats);
            let mut bwd = Vec::with_capacity(repeats);
            let mut activation_bytes = 0;
            for r in 0..warmup + repeats {
                let x = sample_input(&node.kind, &shape, r as u64, &device).cast(dtype);
                let ctx = ForwardCtx {
                    seed: topo.train.seed,
                    step: r as u64,
                    microbatch: 0,
                    layer: i as u64,
                    train: true,
                };
                // A merge takes one tensor of each of its sources' shapes.
                let merged: Vec<Act> = if node.kind.is_merge() {
                    topo.model
                        .sources(i)
                        .iter()
                        .map(|&t| {
                            let mut shape = vec![mbs];
                            shape.extend_from_slice(&graph.layer(t).output_shape);
                            sample_input(&node.kind, &shape, r as u64, &device).cast(dtype)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                // The inputs' upload and cast finish before the window opens: only the
                // layer's own kernels are timed.
                sync(&device);
                // In the training dtype, as a stage runs it: the parameters' cast is part of
                // the forward (and its graph is used up by each backward).
                let (out, forward_ms) = timed(&device, || {
                    if node.kind.is_merge() {
                        node.kind.merge(merged)
                    } else {
                        let mut f = Forward {
                            ctx,
                            weights: WeightGrads::InBackward,
                            local: 0,
                            deferred: &mut Vec::new(),
                        };
                        node.kind
                            .forward(&compute_module(&master, dtype), x, &mut f)
                    }
                });
                let grad = ones_like(&out, &device).cast(out.float_dtype());
                sync(&device);
                let (_grads, backward_ms) = timed(&device, || out.dot(&grad).backward());
                activation_bytes =
                    out.dims().iter().product::<usize>() as u64 * topo.train.dtype.size();
                if r >= warmup {
                    fwd.push(forward_ms);
                    bwd.push(backward_ms);
                }
            }
            let param_bytes = master.num_params() as u64 * 4;
            ProfiledLayer {
                name: node.name.clone(),
                forward_ms: median(fwd),
                backward_ms: median(bwd),
                activation_bytes,
                param_bytes,
                at_threads: Vec::new(),
            }
        })
        .collect();
    Profile {
        layers,
        device_gflops: None,
        microbatch_size: Some(mbs),
    }
}

/// Runs `f` in one of the device's profiling windows and returns its output and its time in
/// ms: on a GPU the device's own clock around the kernels `f` launched (fusion's queue flushed
/// at the window's end), not the host's; on the CPU wall-clock time between two
/// synchronisations (burn's fallback for devices without a clock).
fn timed<O: Send + 'static>(device: &Device, f: impl FnOnce() -> O + Send) -> (O, f64) {
    let (out, window) = device
        .profile_with(ProfileOptions::default().flush(), f)
        .expect("the device opens and closes profiling windows (cuda and flex do)");
    // A window in which nothing ran (a reshape) resolves to no time.
    let ms = futures_lite::future::block_on(window.resolve())
        .map_or(0.0, |ticks| ticks.duration().as_secs_f64() * 1e3);
    (out, ms)
}

fn sync(device: &Device) {
    // A failed sync surfaces again on the next real operation; timing must not abort on it.
    let _ = device.sync();
}

/// A random input of `shape` (batch included) that `kind` accepts, requiring grad when float.
fn sample_input(kind: &LayerKind, shape: &[usize], salt: u64, device: &Device) -> Act {
    let mut r = crate::init::rng(crate::init::Stream::Data, &[u64::MAX, salt]);
    let n = shape.iter().product();
    match kind.token_vocab() {
        Some(vocab) => Act::from_tokens(
            (0..n).map(|_| r.random_range(0..vocab as i64)).collect(),
            shape,
            device,
        ),
        None => {
            Act::from_f32(crate::init::uniform_values(&mut r, n, 1.0), shape, device).require_grad()
        }
    }
}

fn ones_like(a: &Act, device: &Device) -> Act {
    let dims = a.dims();
    Act::from_f32(vec![1.0; dims.iter().product()], &dims, device)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_every_layer_in_the_training_dtype() {
        let toml = r#"
            [model]
            input = [16]
            layers = [ { kind = "linear", out = 32 }, { kind = "relu" }, { kind = "linear", out = 4 } ]
            [train]
            batch = 8
            microbatches = 2
            dtype = "bf16"
            [[hosts]]
            name = "local"
            address = "127.0.0.1"
            devices = ["cpu"]
        "#;
        let topo = brigade_partitioner::parse("p.toml", toml, &[]).unwrap();
        // Several repeats: each must build its own cast graph (a reused one is spent after
        // its first backward).
        let p = profile(&topo, &Device::flex(), 2, 3);
        assert_eq!(p.layers.len(), 3);
        // 4 samples × 32 features × 2 bytes; parameters stay f32.
        assert_eq!(p.layers[0].activation_bytes, 4 * 32 * 2);
        assert_eq!(p.layers[0].param_bytes, (16 * 32 + 32) * 4);
    }
}
