//! A Llama checkpoint transformers made trains under brigade as under transformers, and every
//! pipelined split equals `brigade reference` on it (tests/fixtures/llama/untied-llama3: the
//! checkpoint, 80 token rows and transformers' 20 steps of AdamW with clipping and a cosine
//! schedule).

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama/untied-llama3")
}

/// A topology in `dir` reading the fixture's checkpoint and rows in file order, with `train`.
fn topology(dir: &Path, train: &str) -> String {
    let f = fixture();
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
    let path = dir.join("llama.toml");
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
/// learning rates step for step.
#[test]
fn reference_trains_as_transformers() {
    let dir = tmp("llama-reference");
    let file = topology(&dir, "clip_grad_norm = 1.0");
    let metrics = dir.join("m.jsonl");
    let out = run(&["reference", &file, "--metrics", metrics.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let transformers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("train.json")).unwrap())
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
                "step {}: {key} {a} against transformers' {b}",
                i + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pipelines (2 ranks under each schedule, interleaved chunks, recomputation, 2 replicas)
/// equal the reference on the Llama.
#[test]
fn pipelines_equal_the_reference() {
    let dir = tmp("llama-pipelines");
    let file = topology(&dir, "");
    let want = run_with_outputs(&dir, "reference", "reference", &file, "20", &[]);
    let two = hosts(2);
    let cases: [(&str, Vec<String>); 6] = [
        ("gpipe", vec![two.clone(), "partition.stages=2".into()]),
        (
            "1f1b",
            vec![
                two.clone(),
                "partition.stages=2".into(),
                "train.schedule=\"1f1b\"".into(),
            ],
        ),
        (
            "zb-h1",
            vec![
                two.clone(),
                "partition.stages=2".into(),
                "train.schedule=\"zb-h1\"".into(),
            ],
        ),
        (
            "interleaved",
            vec![
                two.clone(),
                "partition.stages=2".into(),
                "partition.chunks_per_rank=2".into(),
                "train.schedule=\"interleaved-1f1b\"".into(),
                "train.microbatches=4".into(),
            ],
        ),
        (
            "recompute",
            vec![
                two.clone(),
                "partition.stages=2".into(),
                "train.schedule=\"1f1b\"".into(),
                "train.recompute=true".into(),
            ],
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
        let reference = if name == "interleaved" {
            run_with_outputs(
                &dir,
                "reference-4",
                "reference",
                &file,
                "20",
                &["train.microbatches=4".into()],
            )
        } else {
            want.clone()
        };
        assert_same(
            &format!("llama {name}"),
            (&got.0, &got.1),
            (&reference.0, &reference.1),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clipping needs the whole model's norm: on more than one rank it is refused by name.
#[test]
fn clipping_on_several_ranks_is_refused() {
    let dir = tmp("llama-clip");
    let file = topology(&dir, "clip_grad_norm = 1.0");
    let out = run(&[
        "train",
        &file,
        "--set",
        &hosts(2),
        "--set",
        "partition.stages=2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("train.clip_grad_norm"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What brigade trained, exported under the Hugging Face names, is what transformers trained
/// (its 20 steps' final parameters), and reads back as a checkpoint.
#[test]
fn export_writes_what_transformers_trained() {
    let dir = tmp("llama-export");
    let file = topology(&dir, "clip_grad_norm = 1.0");
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
    let written = std::fs::read(hf.join("model.safetensors")).unwrap();
    let written = safetensors::SafeTensors::deserialize(&written).unwrap();
    let want = std::fs::read(fixture().join("train.safetensors")).unwrap();
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
    assert_eq!(written.len(), finals.len(), "one tensor per parameter");
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
            "{hf_name}: {d:e} from transformers' parameters after 20 steps"
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
