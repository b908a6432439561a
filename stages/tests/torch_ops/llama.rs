//! The tiny Llamas transformers made (tests/fixtures/llama, tests/fixtures/make_llama.py):
//! brigade reads each checkpoint through `[model] hf`; its logits, loss and every parameter's
//! gradient for one batch, and 20 AdamW steps with clipping and the cosine schedule, must
//! equal transformers'. This covers `llama_block` and `rms_norm`.

use crate::fixture::{Fixture, Tensor, check, ops_dir, transpose};
use brigade_partitioner::{ConfigError, Topology};
use brigade_stages::loss::Target;
use brigade_stages::{Act, Stage};
use burn::prelude::*;
use std::path::PathBuf;

/// One pass in f32, as the ops (docs in fixture.rs).
const TOL: f64 = 1e-5;

fn dir(variant: &str) -> PathBuf {
    ops_dir().join("../llama").join(variant)
}

/// A topology beside the fixture reading it with `hf = "."`, with `train` keys added.
pub fn topology(variant: &str, train: &str) -> Result<Topology, ConfigError> {
    let file = dir(variant).join("test.toml").display().to_string();
    let text = format!(
        "[model]\nhf = \".\"\nseq = 16\n[train]\nbatch = 4\nmicrobatches = 1\n{train}\n\
         [[hosts]]\nname = \"local\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n"
    );
    brigade_partitioner::parse(&file, &text, &[])
}

/// The model and its checkpoint's parameters on one stage.
fn stage(topo: &Topology) -> Stage {
    let mut s = Stage::new(topo, 0, 0..topo.model.layers.len(), &Device::flex());
    brigade_stages::hf::load_initial(&mut s, topo).unwrap();
    s
}

/// Rows of L + 1 token ids: inputs (the first L) and targets (the last L).
fn batch(t: &Tensor, rows: std::ops::Range<usize>, device: &Device) -> (Act, Target) {
    let width = t.shape[1];
    let ids = t.i64[rows.start * width..rows.end * width].to_vec();
    let all = burn::Tensor::<2, Int>::from_data(TensorData::new(ids, [rows.len(), width]), device);
    let x = all.clone().narrow(1, 0, width - 1);
    let y = all.narrow(1, 1, width - 1);
    (Act::Tokens(x), Target::Tokens(y))
}

fn flat(a: &Act) -> Vec<f32> {
    a.to_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Each parameter in Hugging Face's name and layout, with `values` (a flat buffer in the
/// stage's parameter order: its parameters, or their gradients).
fn by_hf_name(topo: &Topology, s: &Stage, values: &[f32]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let hf = topo.model.hf.as_ref().expect("an hf model");
    let mut at = 0;
    let mut out = Vec::new();
    for (layer, params) in s.parameters() {
        for p in params {
            let v = &values[at..at + p.values.len()];
            at += p.values.len();
            let n = hf
                .names
                .iter()
                .find(|n| n.layer == layer && n.path == p.path);
            let n =
                n.unwrap_or_else(|| panic!("layer {layer} {} has no Hugging Face name", p.path));
            let (shape, v) = if n.transposed {
                let [i, o] = [p.shape[0], p.shape[1]];
                (vec![o, i], transpose(v, i, o))
            } else {
                (p.shape.clone(), v.to_vec())
            };
            out.push((n.hf.clone(), shape, v));
        }
    }
    assert_eq!(at, values.len(), "every value belongs to a parameter");
    out
}

/// Logits, loss and gradients of one batch.
pub fn check_one_batch(variant: &str) {
    let topo = topology(variant, "").unwrap();
    let mut s = stage(&topo);
    let want = Fixture::open_at(&dir(variant).join("expected.safetensors"));
    let tokens = Fixture::open_at(&dir(variant).join("batch.safetensors"));
    let (x, y) = batch(tokens.get("tokens"), 0..4, s.device());
    let logits = s.forward(0, x).unwrap();
    check(
        "logits",
        (&logits.dims(), &flat(&logits)),
        want.get("logits"),
        TOL,
    );
    let (loss, _) = s.backward_loss(0, &y).unwrap();
    let l = want.get("loss").f32[0];
    assert!(
        ((loss - l) / l).abs() < 1e-6,
        "loss {loss} against transformers' {l}"
    );
    let grads = s.take_gradients();
    for (name, shape, g) in by_hf_name(&topo, &s, &grads) {
        check(
            &format!("gradient of {name}"),
            (&shape, &g),
            want.get(&format!("grad.{name}")),
            TOL,
        );
    }
}

/// 20 steps of AdamW with clipping and the cosine schedule on the fixture's rows in order:
/// each step's loss, gradient norm and learning rate, and the parameters at the end.
pub fn check_training(variant: &str) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir(variant).join("train.json")).unwrap())
            .unwrap();
    let train = "steps = 20\noptimizer = \"adamw\"\nlr = 0.01\nbeta1 = 0.9\nbeta2 = 0.95\neps = 1e-8\n\
                 weight_decay = 0.1\nlr_schedule = \"cosine\"\nwarmup_steps = 5\nmin_lr = 0.001\n\
                 clip_grad_norm = 1.0";
    let topo = topology(variant, train).unwrap();
    let mut s = stage(&topo);
    let data = Fixture::open_at(&dir(variant).join("train.safetensors"));
    let series = |k: &str| -> Vec<f64> {
        json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (losses, norms, lrs) = (series("losses"), series("grad_norms"), series("lrs"));
    for step in 0..20 {
        let (x, y) = batch(data.get("tokens"), step * 4..step * 4 + 4, s.device());
        s.forward(0, x).unwrap();
        let (loss, _) = s.backward_loss(0, &y).unwrap();
        let norm = s.grad_norm_squared().sqrt();
        s.scale_grads(brigade_stages::stage::clip_coef(norm, 1.0));
        s.optimizer_step().unwrap();
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        println!(
            "step {step}: loss {loss} ({}), norm {norm} ({})",
            losses[step], norms[step]
        );
        assert!(
            rel(loss as f64, losses[step]) < 1e-4,
            "step {step}: loss {loss} against {}",
            losses[step]
        );
        assert!(
            rel(norm, norms[step]) < 1e-4,
            "step {step}: gradient norm {norm} against {}",
            norms[step]
        );
        assert!(
            rel(topo.train.lr_at(step as u64), lrs[step]) < 1e-12,
            "step {step}: learning rate"
        );
    }
    let params: Vec<f32> = s
        .parameters()
        .into_iter()
        .flat_map(|(_, ps)| ps)
        .flat_map(|p| p.values)
        .collect();
    for (name, shape, v) in by_hf_name(&topo, &s, &params) {
        check(
            &format!("{name} after 20 steps"),
            (&shape, &v),
            data.get(&format!("final.{name}")),
            1e-4,
        );
    }
}

/// The tied checkpoint as brigade holds it: the head a copy of the embedding, transposed; the
/// two copies' gradients, summed in the embedding's layout, are transformers' tied gradient,
/// and each copy takes the sum.
pub fn check_tied_gradient() {
    let topo = topology("tied-gqa", "").unwrap();
    let mut s = stage(&topo);
    let want = Fixture::open_at(&dir("tied-gqa").join("expected.safetensors"));
    let tokens = Fixture::open_at(&dir("tied-gqa").join("batch.safetensors"));
    let (x, y) = batch(tokens.get("tokens"), 0..4, s.device());
    let logits = s.forward(0, x).unwrap();
    check(
        "tied logits",
        (&logits.dims(), &flat(&logits)),
        want.get("logits"),
        TOL,
    );
    s.backward_loss(0, &y).unwrap();
    let tie = s.tie().expect("the checkpoint ties its head");
    let embedding = s.tied_grad(tie.embedding);
    let sum: Vec<f32> = embedding
        .iter()
        .zip(s.tied_grad(tie.head))
        .map(|(a, b)| a + b)
        .collect();
    check(
        "tied gradient (embedding + head)",
        (tie.shape.as_ref(), &sum),
        want.get("grad.model.embed_tokens.weight"),
        TOL,
    );
    s.set_tied_grad(tie.embedding, &sum);
    s.set_tied_grad(tie.head, &sum);
    assert_eq!(s.tied_grad(tie.embedding), sum);
    assert_eq!(
        s.tied_grad(tie.head),
        sum,
        "the head's copy, transposed back"
    );
}

/// The tied model (grouped queries: 4 heads on 2 key/value heads) as an untied copy whose head
/// starts equal to the embedding: the same logits and loss, and the embedding's and head's
/// gradients summing to the tied weight's.
pub fn check_tied_as_untied() {
    let tmp = std::env::temp_dir().join(format!("brigade-tied-{}", std::process::id()));
    untie(&dir("tied-gqa"), &tmp);
    let want = Fixture::open_at(&dir("tied-gqa").join("expected.safetensors"));
    let tokens = Fixture::open_at(&dir("tied-gqa").join("batch.safetensors"));
    let file = tmp.join("t.toml").display().to_string();
    let text = "[model]\nhf = \".\"\nseq = 16\n[train]\nbatch = 4\nmicrobatches = 1\n\
                [[hosts]]\nname = \"local\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n";
    let topo = brigade_partitioner::parse(&file, text, &[]).unwrap();
    let mut s = stage(&topo);
    let (x, y) = batch(tokens.get("tokens"), 0..4, s.device());
    let logits = s.forward(0, x).unwrap();
    check(
        "tied logits",
        (&logits.dims(), &flat(&logits)),
        want.get("logits"),
        TOL,
    );
    s.backward_loss(0, &y).unwrap();
    let flat_grads = s.take_gradients();
    let grads = by_hf_name(&topo, &s, &flat_grads);
    std::fs::remove_dir_all(&tmp).unwrap();
    let embed = "model.embed_tokens.weight";
    let pick = |n: &str| grads.iter().find(|g| g.0 == n).unwrap();
    let sum: Vec<f32> = pick(embed)
        .2
        .iter()
        .zip(&pick("lm_head.weight").2)
        .map(|(a, b)| a + b)
        .collect();
    check(
        "tied gradient (embedding + head)",
        (&pick(embed).1, &sum),
        want.get(&format!("grad.{embed}")),
        TOL,
    );
    for (name, shape, g) in grads
        .iter()
        .filter(|g| g.0 != embed && g.0 != "lm_head.weight")
    {
        check(
            &format!("tied: gradient of {name}"),
            (shape, g),
            want.get(&format!("grad.{name}")),
            TOL,
        );
    }
}

/// Writes `to`/config.json (untied) and model.safetensors (with `lm_head.weight` a copy of
/// the embedding).
fn untie(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("config.json")).unwrap()).unwrap();
    config["tie_word_embeddings"] = false.into();
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    tensors.push(("lm_head.weight".into(), embed));
    let out = safetensors::serialize(tensors, None).unwrap();
    std::fs::write(to.join("model.safetensors"), out).unwrap();
}
