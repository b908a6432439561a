//! Stages chained in one process reproduce the unsplit model: per-micro-batch losses, the
//! gradients crossing every cut, and the parameters after several optimizer steps.

use brigade_partitioner::partition::Split;
use brigade_partitioner::{Topology, load};
use brigade_stages::params::max_rel_diff;
use brigade_stages::{Act, Stage, SyntheticData};
use burn::prelude::Device;

const REL: f64 = 1e-5;
const STEPS: u64 = 3;

struct Run {
    /// losses[step][mb]
    losses: Vec<Vec<f32>>,
    /// Gradient arriving at the input of layer c, keyed by (step, mb, c), flattened.
    cut_grads: Vec<((u64, u64, usize), Vec<f32>)>,
    /// Parameters per global layer after the last step.
    params: Vec<(usize, Vec<Vec<f32>>)>,
}

fn flat(a: &Act) -> Vec<f32> {
    a.to_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Runs `split` GPipe-style (all forwards, then all backwards in reverse order) so several
/// micro-batches' graphs are alive at once.
fn run(topo: &Topology, split: &Split) -> Run {
    let device = Device::flex();
    let mut stages: Vec<Stage> = (0..split.stages())
        .map(|k| Stage::new(topo, k, split.range(k), &device))
        .collect();
    let data = SyntheticData::new(topo);
    let m = topo.train.microbatches as u64;
    let mut losses = Vec::new();
    let mut cut_grads = Vec::new();
    for step in 0..STEPS {
        for mb in 0..m {
            let mut x = data.inputs(step, mb, stages[0].device());
            for s in stages.iter_mut() {
                x = s.forward(mb, x).unwrap();
            }
        }
        let mut step_losses = vec![0.0; m as usize];
        for mb in (0..m).rev() {
            let last = stages.len() - 1;
            let target = data.targets(step, mb, stages[last].device());
            let (loss, mut g) = stages[last].backward_loss(mb, &target).unwrap();
            step_losses[mb as usize] = loss;
            for k in (0..last).rev() {
                let grad = g.expect("a later stage returns its input gradient");
                cut_grads.push(((step, mb, split.0[k + 1]), flat(&grad)));
                g = stages[k].backward(mb, grad).unwrap();
            }
            assert!(g.is_none(), "the first stage returns no input gradient");
        }
        for s in stages.iter_mut() {
            assert_eq!(s.live_microbatches(), 0);
            s.optimizer_step().unwrap();
        }
        losses.push(step_losses);
    }
    let params = stages
        .iter()
        .flat_map(|s| s.parameters())
        .map(|(i, ps)| (i, ps.into_iter().map(|p| p.values).collect()))
        .collect();
    Run {
        losses,
        cut_grads,
        params,
    }
}

fn check(file: &str, splits: &[&[usize]]) {
    let topo = load(
        &format!(
            "{}/../topologies/{file}",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        ),
        &[],
    )
    .unwrap();
    let n = topo.model.layers.len();
    let whole = run(&topo, &Split::from_counts(&[n]));
    let singletons = run(&topo, &Split::from_counts(&vec![1; n]));
    for counts in splits
        .iter()
        .copied()
        .chain(std::iter::once(&vec![1; n][..]))
    {
        let split = Split::from_counts(counts);
        let got = run(&topo, &split);
        for (step, (a, b)) in got.losses.iter().zip(&whole.losses).enumerate() {
            let d = max_rel_diff(a, b);
            assert!(
                d <= REL,
                "{file} {counts:?}: step {step} losses differ by {d:e}: {a:?} vs {b:?}"
            );
        }
        for ((i, pa), (j, pb)) in got.params.iter().zip(&whole.params) {
            assert_eq!(i, j);
            for (a, b) in pa.iter().zip(pb) {
                let d = max_rel_diff(a, b);
                assert!(
                    d <= REL,
                    "{file} {counts:?}: layer {i} parameters differ by {d:e}"
                );
            }
        }
        for (key, g) in &got.cut_grads {
            let (_, reference) = singletons
                .cut_grads
                .iter()
                .find(|(k, _)| k == key)
                .expect("every cut exists in the singleton split");
            let d = max_rel_diff(g, reference);
            assert!(
                d <= REL,
                "{file} {counts:?}: gradient at cut {key:?} differs by {d:e}"
            );
        }
    }
    // The loss must move: a run that never updates would pass the comparisons above.
    assert_ne!(
        whole.losses[0],
        whole.losses[STEPS as usize - 1],
        "{file}: training did not change the loss"
    );
}

#[test]
fn mlp_with_dropout_splits_match_the_unsplit_model() {
    check(
        "quickstart.toml",
        &[&[3, 3], &[1, 5], &[2, 2, 2], &[1, 1, 1, 3]],
    );
}

#[test]
fn cnn_splits_match_the_unsplit_model() {
    check("cnn.toml", &[&[3, 7], &[1, 5, 4], &[6, 4]]);
}

#[test]
fn transformer_lm_splits_match_the_unsplit_model() {
    check("transformer-lm.toml", &[&[2, 1, 1, 3], &[1, 6], &[4, 3]]);
}

/// With `train.recompute = true` every split still reproduces the plain unsplit model: the
/// forward rerun at backward time draws the same dropout masks.
fn recomputed(file: &str, splits: &[&[usize]]) {
    let path = format!(
        "{}/../topologies/{file}",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let plain = load(&path, &[]).unwrap();
    let recompute = load(&path, &["train.recompute=true".to_string()]).unwrap();
    assert!(recompute.train.recompute && !plain.train.recompute);
    let n = plain.model.layers.len();
    let whole = run(&plain, &Split::from_counts(&[n]));
    for counts in splits.iter().copied().chain(std::iter::once(&[n][..])) {
        let got = run(&recompute, &Split::from_counts(counts));
        for (step, (a, b)) in got.losses.iter().zip(&whole.losses).enumerate() {
            let d = max_rel_diff(a, b);
            assert!(
                d <= REL,
                "{file} {counts:?} recomputed: step {step} losses differ by {d:e}"
            );
        }
        for ((i, pa), (_, pb)) in got.params.iter().zip(&whole.params) {
            for (a, b) in pa.iter().zip(pb) {
                let d = max_rel_diff(a, b);
                assert!(
                    d <= REL,
                    "{file} {counts:?} recomputed: layer {i} differs by {d:e}"
                );
            }
        }
    }
}

#[test]
fn recomputation_reproduces_the_model_with_dropout_and_attention() {
    recomputed("quickstart.toml", &[&[3, 3], &[1, 5]]);
    recomputed("transformer-lm.toml", &[&[2, 1, 1, 3]]);
}

/// `train.dtype = "bf16"` / `"f16"`: activations and gradients in half precision, f32 master
/// weights. Every split computes exactly what the unsplit half-precision model computes (the
/// same operations in the same dtype), and the run follows f32 training to half precision's
/// accuracy. (The engine refuses half precision on CPU devices; flex runs it here only to
/// check the stage logic without a GPU.)
fn half_precision(file: &str, dtype: &str, splits: &[&[usize]]) {
    let path = format!(
        "{}/../topologies/{file}",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let f32_topo = load(&path, &[]).unwrap();
    let half = load(&path, &[format!("train.dtype=\"{dtype}\"")]).unwrap();
    half_precision_of(file, dtype, &f32_topo, &half, splits);
}

fn half_precision_of(
    file: &str,
    dtype: &str,
    f32_topo: &Topology,
    half: &Topology,
    splits: &[&[usize]],
) {
    let n = half.model.layers.len();
    let whole = run(half, &Split::from_counts(&[n]));
    let full = run(f32_topo, &Split::from_counts(&[n]));
    for counts in splits {
        let got = run(half, &Split::from_counts(counts));
        assert_eq!(
            got.losses, whole.losses,
            "{file} {dtype} {counts:?}: losses"
        );
        assert_eq!(
            got.params, whole.params,
            "{file} {dtype} {counts:?}: parameters"
        );
    }
    for (step, (a, b)) in whole.losses.iter().zip(&full.losses).enumerate() {
        let d = max_rel_diff(a, b);
        assert!(
            d <= 3e-2,
            "{file} {dtype}: step {step} losses differ from f32 by {d:e}: {a:?} vs {b:?}"
        );
    }
    // The master weights moved by f32-sized updates: they are not rounded to half precision.
    let (_, first) = &whole.params[0];
    let rounded = first[0]
        .iter()
        .filter(|v| burn::tensor::bf16::from_f32(**v).to_f32() == **v)
        .count();
    assert!(
        rounded < first[0].len() / 2,
        "{file} {dtype}: parameters look rounded to half precision"
    );
}

#[test]
fn half_precision_training_splits_match_and_follow_f32() {
    half_precision("quickstart.toml", "bf16", &[&[3, 3], &[1, 5]]);
    half_precision("quickstart.toml", "f16", &[&[2, 4]]);
    half_precision("transformer-lm.toml", "bf16", &[&[2, 1, 1, 3]]);
}

/// The Llama layers (RMSNorm, rotary grouped-query attention, SwiGLU) in bf16, as the GPU
/// bench trains them (benches/gpu/side_by_side.sh).
#[test]
fn half_precision_llama_splits_match_and_follow_f32() {
    let toml = r#"
name = "llama-bf16"
[model]
input = [16]
layers = [
  { kind = "embedding", vocab = 32, dim = 32 },
  { kind = "llama_block", heads = 4, kv_heads = 2, ff = 64 },
  { kind = "llama_block", heads = 4, kv_heads = 2, ff = 64 },
  { kind = "rms_norm" },
  { kind = "linear", out = 32, bias = false },
]
loss = "cross_entropy"
[data]
source = "synthetic"
seed = 2
[train]
steps = 3
batch = 8
microbatches = 2
optimizer = "adamw"
lr = 0.003
seed = 3
[[hosts]]
name = "local"
address = "127.0.0.1"
devices = ["cpu"]
"#;
    let f32_topo = brigade_partitioner::parse("llama.toml", toml, &[]).unwrap();
    let half =
        brigade_partitioner::parse("llama.toml", toml, &["train.dtype=\"bf16\"".into()]).unwrap();
    half_precision_of("llama", "bf16", &f32_topo, &half, &[&[2, 3], &[1, 1, 3]]);
}
