//! Training on Parquet data: pipelined runs equal the reference on every layout real writers
//! produce, evaluation figures agree, resuming continues the same samples, and the quickstart
//! learns the real digits.

mod common;
#[path = "common/dataset.rs"]
mod dataset;

use common::{assert_same, evals, hosts, run, run_with_outputs, stderr, tmp};
use dataset::*;

#[test]
fn pipelined_training_on_spark_output_equals_the_reference() {
    let dir = tmp("parquet-spark");
    let (xs, ys) = samples(700, 1);
    // Three part files in row groups of 50: 14 row groups, 2 of them held out.
    spark_dir(&dir.join("train"), &xs, &ys, 250, 50);
    let file = topology(
        &dir,
        &format!(
            "[data]\nsource = \"parquet\"\npath = \"{}\"\nfeatures = \"features\"\nlabel = \"label\"\n\
             validation_fraction = 0.1\nshuffle_buffer = 96\nseed = 5\n\n[eval]\nevery = 4\n",
            dir.join("train").display()
        ),
    );
    // 12 steps of 64 samples: past the end of the 600-row epoch into the next.
    let steps = "12";
    let (ref_losses, ref_params) = run_with_outputs(&dir, "ref", "reference", &file, steps, &[]);
    let ref_evals = evals(&dir.join("ref.jsonl"));
    // ZB-H1's weight pass is per micro-batch (the others batch it): its reference is told so.
    let zb = run_with_outputs(
        &dir,
        "ref-zb",
        "reference",
        &file,
        steps,
        &["train.schedule=zb-h1".into()],
    );
    let zb_evals = evals(&dir.join("ref-zb.jsonl"));
    assert_eq!(
        ref_evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![4, 8, 12]
    );
    for (stages, schedule) in [
        (2, "gpipe"),
        (2, "1f1b"),
        (4, "gpipe"),
        (4, "1f1b"),
        (2, "interleaved-1f1b"),
        (2, "zb-h1"),
    ] {
        let name = format!("{stages}-{schedule}");
        let got = run_with_outputs(
            &dir,
            &name,
            "train",
            &file,
            steps,
            &[
                hosts(stages),
                format!("partition.stages={stages}"),
                format!("train.schedule={schedule}"),
            ],
        );
        let (want, want_evals) = if schedule == "zb-h1" {
            ((&zb.0[..], &zb.1), &zb_evals)
        } else {
            ((&ref_losses[..], &ref_params), &ref_evals)
        };
        assert_same(&name, (&got.0, &got.1), want);
        assert_eq!(
            &evals(&dir.join(format!("{name}.jsonl"))),
            want_evals,
            "{name}: validation figures"
        );
    }
}

#[test]
fn scalar_columns_and_fixed_size_lists_read_like_spark_lists() {
    let dir = tmp("parquet-layouts");
    let (xs, ys) = samples(300, 2);
    let names: Vec<String> = (0..FEATURES).map(|i| format!("x{i}")).collect();
    let mut columns: Vec<(&str, arrow_array::ArrayRef)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), float32(xs.iter().map(|x| x[i]).collect())))
        .collect();
    columns.push(("label", int64(&ys)));
    write(&dir.join("scalars.parquet"), columns, 64, true);
    write(
        &dir.join("fixed.parquet"),
        vec![("pixels", fixed_list(&xs)), ("y", int64(&ys))],
        64,
        true,
    );
    spark_dir(&dir.join("spark"), &xs, &ys, 300, 64);
    let section = |path: &str, features: &str, label: &str| {
        format!(
            "[data]\nsource = \"parquet\"\npath = \"{path}\"\nfeatures = {features}\nlabel = \"{label}\"\nshuffle_buffer = 50\n"
        )
    };
    let scalar_names = format!(
        "[{}]",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cases = [
        (
            "scalars",
            section("scalars.parquet", &scalar_names, "label"),
        ),
        ("fixed", section("fixed.parquet", "\"pixels\"", "y")),
        ("spark", section("spark", "\"features\"", "label")),
    ];
    let mut runs = Vec::new();
    for (name, data) in &cases {
        topology(&dir, data);
        let file = dir.join(format!("{name}.toml"));
        std::fs::rename(dir.join("topology.toml"), &file).unwrap();
        let f = file.to_str().unwrap();
        let reference = run_with_outputs(&dir, &format!("{name}-ref"), "reference", f, "6", &[]);
        let piped = run_with_outputs(
            &dir,
            &format!("{name}-1f1b"),
            "train",
            f,
            "6",
            &["train.schedule=1f1b".into()],
        );
        assert_same(name, (&piped.0, &piped.1), (&reference.0, &reference.1));
        runs.push(reference);
    }
    // The same rows in three layouts are the same samples.
    for r in &runs[1..] {
        assert_same("layouts", (&r.0, &r.1), (&runs[0].0, &runs[0].1));
    }
}

#[test]
fn a_resumed_run_reads_the_samples_the_uninterrupted_run_read() {
    let dir = tmp("parquet-resume");
    let (xs, ys) = samples(400, 3);
    spark_dir(&dir.join("data"), &xs, &ys, 200, 40);
    let file = topology(
        &dir,
        &format!(
            "[data]\nsource = \"parquet\"\npath = \"{}\"\nfeatures = \"features\"\nlabel = \"label\"\nshuffle_buffer = 30\n",
            dir.join("data").display()
        ),
    );
    let ck = dir.join("ck");
    let ck = ck.to_str().unwrap();
    let first = run(&[
        "train",
        &file,
        "--steps",
        "5",
        "--checkpoint-dir",
        ck,
        "--checkpoint-every",
        "5",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    // Steps 6..=14 cross an epoch boundary (400 rows = 6.25 steps of 64).
    let m = dir.join("resumed.jsonl");
    let resumed = run(&[
        "train",
        &file,
        "--steps",
        "14",
        "--checkpoint-dir",
        ck,
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let (want, _) = run_with_outputs(&dir, "ref", "reference", &file, "14", &[]);
    let got = common::losses(&m);
    assert_eq!(got.len(), 9);
    for (a, b) in got.iter().zip(&want[5..]) {
        assert!(
            ((a - b) / b).abs() <= 1e-6,
            "resumed {got:?} vs {:?}",
            &want[5..]
        );
    }
}

#[test]
fn the_quickstart_learns_the_digits_and_evaluate_agrees() {
    let dir = tmp("quickstart-digits");
    let (m, ck) = (dir.join("m.jsonl"), dir.join("ck"));
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--metrics",
        m.to_str().unwrap(),
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--checkpoint-every",
        "200",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("validation after step 200"), "{printed}");
    let figures = evals(&m);
    assert_eq!(
        figures.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![50, 100, 150, 200]
    );
    let (_, loss, accuracy) = figures[3];
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");

    let out = run(&[
        "evaluate",
        "topologies/quickstart.toml",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["step"], 200);
    assert_eq!(v["rows"], 359);
    assert!(
        (v["val_loss"].as_f64().unwrap() - loss).abs() <= 1e-6 * loss,
        "{v}"
    );
    assert_eq!(v["val_accuracy"].as_f64().unwrap(), accuracy);
    // Any split of the same columns: the training split fits better than the test split.
    let out = run(&[
        "evaluate",
        "topologies/quickstart.toml",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        "data/digits/train.parquet",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 1438);
    assert!(v["val_accuracy"].as_f64().unwrap() > accuracy - 0.02, "{v}");
}

#[test]
fn a_language_model_reads_token_sequences() {
    let dir = tmp("parquet-tokens");
    // Sequences of 33 tokens (32 inputs and their next tokens) from a simple rule.
    let seqs: Vec<Vec<i64>> = (0..96)
        .map(|i| (0..33).map(|t| ((i * 7 + t * t) % 64) as i64).collect())
        .collect();
    write(
        &dir.join("text.parquet"),
        vec![("tokens", tokens(&seqs))],
        32,
        true,
    );
    let file = token_lm(&dir, &dir.join("text.parquet"), "validation_fraction = 0.3");
    let f = file.as_str();
    let reference = run_with_outputs(&dir, "ref", "reference", f, "3", &["eval.every=1".into()]);
    let piped = run_with_outputs(&dir, "piped", "train", f, "3", &["eval.every=1".into()]);
    assert_same("lm", (&piped.0, &piped.1), (&reference.0, &reference.1));
    assert_eq!(
        evals(&dir.join("piped.jsonl")),
        evals(&dir.join("ref.jsonl"))
    );
    assert_eq!(evals(&dir.join("ref.jsonl")).len(), 3);
}

#[test]
fn mse_models_read_float_targets_and_report_no_accuracy() {
    let dir = tmp("parquet-mse");
    let (xs, ys) = samples(256, 6);
    // One-hot targets as a list column, the way a Spark job writes a vector label.
    let onehot: Vec<Vec<Option<f32>>> = ys
        .iter()
        .map(|&y| {
            (0..CLASSES)
                .map(|c| Some(f32::from(c as i64 == y)))
                .collect()
        })
        .collect();
    write(
        &dir.join("mse.parquet"),
        vec![
            ("features", spark_list(&dense(&xs))),
            ("target", spark_list(&onehot)),
        ],
        64,
        true,
    );
    let file = topology(
        &dir,
        "[data]\nsource = \"parquet\"\npath = \"mse.parquet\"\nfeatures = \"features\"\nlabel = \"target\"\nvalidation_fraction = 0.25\n",
    );
    let set = ["model.loss=\"mse\"".to_string()];
    let reference = run_with_outputs(&dir, "ref", "reference", &file, "5", &set);
    let piped = run_with_outputs(&dir, "piped", "train", &file, "5", &set);
    assert_same("mse", (&piped.0, &piped.1), (&reference.0, &reference.1));
    let lines =
        |name: &str| brigade_engine::metrics::read_eval(dir.join(name).to_str().unwrap()).unwrap();
    let (got, want) = (lines("piped.jsonl"), lines("ref.jsonl"));
    assert_eq!(got, want);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].val_accuracy.is_none() && got[0].val_loss > 0.0,
        "{got:?}"
    );
}
