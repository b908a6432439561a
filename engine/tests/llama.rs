//! A Llama checkpoint transformers made trains under brigade as under transformers, and every
//! pipelined split equals `brigade reference` on it (tests/fixtures/llama/untied-llama3: the
//! checkpoint, 80 token rows and transformers' 20 steps of AdamW with clipping and a cosine
//! schedule).

mod common;

use common::*;
use std::path::{Path, PathBuf};

const UNTIED: &str = "untied-llama3";
/// Tied embeddings, grouped-query attention.
const TIED: &str = "tied-gqa";

fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llama")
        .join(variant)
}

/// A topology in `dir` reading `variant`'s checkpoint and rows in file order, with `train`.
fn topology(dir: &Path, variant: &str, train: &str) -> String {
    let f = fixture(variant);
    let text = format!(
        "name = \"tiny-llama\"\n[model]\nhf = \"{}\"\nseq = 16\n\
         [data]\nsource = \"parquet\"\npath = \"{}\"\ntokens = \"tokens\"\nshuffle = false\n\
         [train]\nsteps = 20\nbatch = 4\nmicrobatches = 2\nschedule = \"gpipe\"\n\
         optimizer = \"adamw\"\nlr = 0.01\nbeta1 = 0.9\nbeta2 = 0.95\neps = 1e-8\nweight_decay = 0.1\n\
         lr_schedule = \"cosine\"\nwarmup_steps = 5\nmin_lr = 0.001\nseed = 1\n{train}\n\
         [[hosts]]\nname = \"local\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n",
        f.display(),
        f.join("train.parquet").display()
    );
    let path = dir.join(format!("{variant}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn series(json: &serde_json::Value, key: &str) -> Vec<f64> {
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// `brigade reference` with clipping reproduces transformers' losses, gradient norms and
/// learning rates step for step, the tied model's included.
#[test]
fn reference_trains_as_transformers() {
    for variant in [UNTIED, TIED] {
        reference_as_transformers(variant);
    }
}

fn reference_as_transformers(variant: &str) {
    let dir = tmp(&format!("llama-reference-{variant}"));
    let file = topology(&dir, variant, "clip_grad_norm = 1.0");
    let metrics = dir.join("m.jsonl");
    let out = run(&["reference", &file, "--metrics", metrics.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let transformers: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(variant).join("train.json")).unwrap(),
    )
    .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-4;
    for (i, l) in lines.iter().enumerate() {
        for (key, want) in [
            ("loss", "losses"),
            ("grad_norm", "grad_norms"),
            ("lr", "lrs"),
        ] {
            let (a, b) = (l[key].as_f64().unwrap(), series(&transformers, want)[i]);
            assert!(
                close(a, b),
                "{variant} step {}: {key} {a} against transformers' {b}",
                i + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The metrics file's per-step gradient norms.
fn grad_norms(dir: &Path, name: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["grad_norm"].as_f64().unwrap())
        .collect()
}

/// Pipelines (2 and 4 ranks under each schedule, interleaved chunks, recomputation, 2
/// replicas) equal the reference on the Llama, clipping by the norm of the whole model: every
/// rank's layers count once, whatever the split.
#[test]
fn pipelines_equal_the_reference() {
    let dir = tmp("llama-pipelines");
    let file = topology(&dir, UNTIED, "clip_grad_norm = 1.0");
    let want = run_with_outputs(&dir, "reference", "reference", &file, "20", &[]);
    let two = || vec![hosts(2), "partition.stages=2".to_string()];
    let with = |base: Vec<String>, more: &[&str]| -> Vec<String> {
        base.into_iter()
            .chain(more.iter().map(|m| m.to_string()))
            .collect()
    };
    let cases: [(&str, Vec<String>); 7] = [
        ("gpipe", two()),
        ("1f1b", with(two(), &["train.schedule=\"1f1b\""])),
        ("zb-h1", with(two(), &["train.schedule=\"zb-h1\""])),
        (
            "four",
            vec![
                hosts(4),
                "partition.stages=4".into(),
                "train.schedule=\"1f1b\"".into(),
            ],
        ),
        (
            "interleaved",
            with(
                two(),
                &[
                    "partition.chunks_per_rank=2",
                    "train.schedule=\"interleaved-1f1b\"",
                    "train.microbatches=4",
                ],
            ),
        ),
        (
            "recompute",
            with(two(), &["train.schedule=\"1f1b\"", "train.recompute=true"]),
        ),
        (
            "replicas",
            vec![
                hosts(4),
                "partition.stages=2".into(),
                "partition.replicas=2".into(),
            ],
        ),
    ];
    for (name, overrides) in cases {
        let got = run_with_outputs(&dir, name, "train", &file, "20", &overrides);
        let (reference, reference_name) = if name == "interleaved" {
            let r = run_with_outputs(
                &dir,
                "reference-4",
                "reference",
                &file,
                "20",
                &["train.microbatches=4".into()],
            );
            (r, "reference-4")
        } else {
            (want.clone(), "reference")
        };
        assert_same(
            &format!("llama {name}"),
            (&got.0, &got.1),
            (&reference.0, &reference.1),
        );
        let (a, b) = (grad_norms(&dir, name), grad_norms(&dir, reference_name));
        assert_eq!(a.len(), 20, "llama {name}: a gradient norm every step");
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                ((a - b) / b).abs() <= 1e-5,
                "llama {name}: step {} gradient norm {a} against the reference's {b}",
                i + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What brigade trained, exported under the Hugging Face names, is what transformers trained
/// (its 20 steps' final parameters), and reads back as a checkpoint.
#[test]
fn export_writes_what_transformers_trained() {
    for variant in [UNTIED, TIED] {
        export_as_transformers(variant);
    }
}

fn export_as_transformers(variant: &str) {
    let dir = tmp(&format!("llama-export-{variant}"));
    let file = topology(&dir, variant, "clip_grad_norm = 1.0");
    let params = dir.join("params");
    let out = run(&[
        "reference",
        &file,
        "--save-params",
        params.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hf = dir.join("hf");
    let out = run(&[
        "export",
        &file,
        "--params",
        params.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // --save-params wrote the same Hugging Face files beside brigade's own.
    for f in ["model.safetensors", "config.json"] {
        assert_eq!(
            std::fs::read(params.join(f)).unwrap(),
            std::fs::read(hf.join(f)).unwrap(),
            "{variant}: --save-params's {f} is the export's"
        );
    }
    let written = std::fs::read(hf.join("model.safetensors")).unwrap();
    let written = safetensors::SafeTensors::deserialize(&written).unwrap();
    let want = std::fs::read(fixture(variant).join("train.safetensors")).unwrap();
    let want = safetensors::SafeTensors::deserialize(&want).unwrap();
    let f32s = |d: &[u8]| -> Vec<f32> {
        d.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let finals: Vec<String> = want
        .names()
        .into_iter()
        .filter(|n| n.starts_with("final."))
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        written.len(),
        finals.len(),
        "{variant}: one tensor per parameter (a tied weight once)"
    );
    for name in finals {
        let hf_name = name.trim_start_matches("final.");
        let (a, b) = (
            written.tensor(hf_name).unwrap(),
            want.tensor(&name).unwrap(),
        );
        assert_eq!(a.shape(), b.shape(), "{hf_name}");
        let d = brigade_stages::params::max_rel_diff(&f32s(a.data()), &f32s(b.data()));
        assert!(
            d < 1e-4,
            "{variant} {hf_name}: {d:e} from transformers' parameters after 20 steps"
        );
    }
    // The export is a checkpoint brigade reads again.
    let again = dir.join("again.toml");
    std::fs::write(&again, format!(
            "[model]\nhf = \"{}\"\nseq = 16\n[[hosts]]\nname = \"local\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n",
            hf.display()
        )).unwrap();
    let out = run(&["plan", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tied Llama on 2 ranks (the embedding on one, the head on the other: their gradients
/// summed between the two every step), on one rank with both, and with 2 replicas, clipping,
/// equals the reference; the two copies of the tied weight stay equal to the bit.
#[test]
fn tied_embeddings_across_ranks_equal_the_reference() {
    let dir = tmp("llama-tied");
    let file = topology(&dir, TIED, "clip_grad_norm = 1.0");
    let two = hosts(2);
    let out = run(&["plan", &file, "--set", &two, "--set", "partition.stages=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("embed_tokens and lm_head share one weight, ranks 0 and 1 each keep a copy"),
        "{text}"
    );
    let want = run_with_outputs(&dir, "reference", "reference", &file, "20", &[]);
    let cases: [(&str, Vec<String>); 3] = [
        ("two", vec![hosts(2), "partition.stages=2".into()]),
        (
            "interleaved-one-rank",
            vec![
                hosts(1),
                "partition.stages=1".into(),
                "partition.chunks_per_rank=2".into(),
                "train.schedule=\"interleaved-1f1b\"".into(),
            ],
        ),
        (
            "replicas",
            vec![
                hosts(4),
                "partition.stages=2".into(),
                "partition.replicas=2".into(),
                "train.schedule=\"1f1b\"".into(),
            ],
        ),
    ];
    for (name, overrides) in cases {
        let got = run_with_outputs(&dir, name, "train", &file, "20", &overrides);
        assert_same(
            &format!("tied {name}"),
            (&got.0, &got.1),
            (&want.0, &want.1),
        );
        let (e, h) = (
            &got.1["layers.0.embedding.weight"],
            // embedding, 2 blocks, norm, head
            &got.1["layers.4.linear.weight"],
        );
        let (vocab, dim) = (e.len() / 32, 32);
        for r in 0..vocab {
            for c in 0..dim {
                assert_eq!(
                    e[r * dim + c].to_bits(),
                    h[c * vocab + r].to_bits(),
                    "tied {name}: the copies differ at [{r}, {c}]"
                );
            }
        }
        let (a, b) = (grad_norms(&dir, name), grad_norms(&dir, "reference"));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                ((a - b) / b).abs() <= 1e-5,
                "tied {name}: step {} gradient norm {a} against the reference's {b}",
                i + 1
            );
        }
    }
    // Checkpoints keep the tied weight once (the head's file holds nothing); a resume on one
    // rank takes the head's copy from the embedding's file and ends where the reference ends.
    let ck = dir.join("ck");
    let ck_arg = ck.to_str().unwrap();
    let out = run(&[
        "train",
        &file,
        "--steps",
        "10",
        "--set",
        &two,
        "--set",
        "partition.stages=2",
        "--checkpoint-every",
        "10",
        "--checkpoint-dir",
        ck_arg,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head =
        std::fs::read(brigade_stages::checkpoint::step_dir(&ck, 10).join("layer-4.safetensors"))
            .unwrap();
    let head = safetensors::SafeTensors::deserialize(&head).unwrap();
    assert!(head.tensors().is_empty(), "the head's copy is not stored");
    let params = dir.join("resumed-params");
    let out = run(&[
        "train",
        &file,
        "--steps",
        "20",
        "--set",
        &hosts(1),
        "--set",
        "partition.stages=1",
        "--checkpoint-dir",
        ck_arg,
        "--resume",
        "--save-params",
        params.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = brigade_engine::params_io::load_dir(&params).unwrap();
    assert_same(
        "tied resumed",
        (&want.0[..0], &resumed),
        (&want.0[..0], &want.1),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
