//! Every schedule — GPipe, 1F1B, interleaved 1F1B (v = 2) and ZB-H1 — with and without
//! activation recomputation, on 2 and 4 ranks, trains exactly what `brigade reference` trains:
//! the same loss at every step and the same final parameters, on the MLP with dropout, the CNN
//! and the transformer LM. Real stage processes over real links.
//!
//! Interleaving cuts the model into ranks × 2 chunks, so it needs at least that many layers:
//! the MLP (6 layers) and the LM (7) run it on 4 ranks in a deeper variant of themselves (10 and
//! 8 layers), the CNN (10) as it is.

mod common;

use brigade_engine::params_io::load_dir;
use common::*;

const SCHEDULES: [&str; 4] = ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1"];

/// Steps of the run that shows the reference learns, and how many at each end it averages.
const LEARN_STEPS: usize = 30;
const LEARN_ENDS: usize = 5;

/// The reference learns `file` (with `overrides`): over [`LEARN_STEPS`] steps, the mean loss
/// of the last [`LEARN_ENDS`] is below `most` × that of the first. The pipelined runs equal the
/// reference, so they learn too — equality alone would pass an optimizer that never steps.
/// Measured ratios: MLP 0.16 (deeper 0.25), LM 0.82 (deeper 0.81), CNN 0.972 (its synthetic
/// teacher is hard to learn, but with the optimizer not stepping its ratio is 0.999).
fn assert_learns(dir: &std::path::Path, test: &str, file: &str, overrides: &[String], most: f64) {
    let steps = LEARN_STEPS.to_string();
    let (losses, _) = run_with_outputs(dir, "learns", "reference", file, &steps, overrides);
    assert_eq!(
        losses.len(),
        LEARN_STEPS,
        "{test}: steps of the learning run"
    );
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let first = mean(&losses[..LEARN_ENDS]);
    let last = mean(&losses[LEARN_STEPS - LEARN_ENDS..]);
    assert!(
        last < most * first,
        "{test}: the reference did not learn: mean loss {first:.4} over its first {LEARN_ENDS} steps, \
         {last:.4} over its last {LEARN_ENDS} (of {LEARN_STEPS}); losses {losses:?}"
    );
}

/// Each schedule × recomputation × ranks in `ranks` (a schedule listed in `skip` for a rank
/// count is left out) against one reference run.
fn every_schedule(
    test: &str,
    file: &str,
    steps: &str,
    ranks: &[usize],
    skip: &[(usize, &str)],
    learns: f64,
) {
    let dir = tmp(test);
    let (ref_losses, ref_params) =
        run_with_outputs(&dir, "reference", "reference", file, steps, &[]);
    // ZB-H1 keeps its weight pass per micro-batch where the other schedules batch it over the
    // step (train.batch_weight_grads): its reference is the same model told the same schedule.
    let zb_ref = run_with_outputs(
        &dir,
        "reference-zb",
        "reference",
        file,
        steps,
        &["train.schedule=zb-h1".into()],
    );
    assert_learns(&dir, test, file, &[], learns);
    let mut ran = 0;
    for &k in ranks {
        let cpus = vec!["\"cpu\""; k].join(",");
        let hosts = format!(r#"hosts=[{{name="local",address="127.0.0.1",devices=[{cpus}]}}]"#);
        for schedule in SCHEDULES {
            if skip.contains(&(k, schedule)) {
                continue;
            }
            for recompute in [false, true] {
                let name = format!("{schedule}-k{k}-rc{recompute}");
                let overrides = vec![
                    hosts.clone(),
                    format!("partition.stages={k}"),
                    format!("train.schedule={schedule}"),
                    format!("train.recompute={recompute}"),
                ];
                let (losses, params) =
                    run_with_outputs(&dir, &name, "train", file, steps, &overrides);
                let want = if schedule == "zb-h1" {
                    (&zb_ref.0[..], &zb_ref.1)
                } else {
                    (&ref_losses[..], &ref_params)
                };
                assert_same(&format!("{test} {name}"), (&losses, &params), want);
                ran += 1;
            }
        }
    }
    assert!(ran >= 12, "{test}: only {ran} runs");
    // Recomputation on some chunks only (here the first of two).
    let two = r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu"]}]"#;
    let overrides = [
        two.to_string(),
        "partition.stages=2".into(),
        "train.schedule=1f1b".into(),
        "train.recompute=[0]".into(),
    ];
    let (losses, params) =
        run_with_outputs(&dir, "chunk0-recomputes", "train", file, steps, &overrides);
    assert_same(
        &format!("{test} recompute = [0]"),
        (&losses, &params),
        (&ref_losses, &ref_params),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mlp_with_dropout_every_schedule_equals_the_reference() {
    every_schedule(
        "sched-mlp",
        "topologies/quickstart.toml",
        "4",
        &[2, 4],
        &[(4, "interleaved-1f1b")],
        0.9,
    );
}

#[test]
fn cnn_every_schedule_equals_the_reference() {
    every_schedule("sched-cnn", "topologies/cnn.toml", "3", &[2, 4], &[], 0.985);
}

#[test]
fn transformer_lm_every_schedule_equals_the_reference() {
    every_schedule(
        "sched-lm",
        "topologies/transformer-lm.toml",
        "3",
        &[2, 4],
        &[(4, "interleaved-1f1b")],
        0.9,
    );
}

#[test]
fn a_checkpoint_from_one_schedule_resumes_under_another() {
    // Interleaved (4 chunks on 2 ranks) writes per-layer checkpoints; ZB-H1 (2 chunks) resumes
    // them and continues exactly as the uninterrupted reference.
    let dir = tmp("sched-resume");
    let ckpt = dir.join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let file = "topologies/quickstart.toml";
    let out = run(&[
        "train",
        file,
        "--steps",
        "4",
        "--set",
        "train.schedule=interleaved-1f1b",
        "--checkpoint-dir",
        ckpt,
        "--checkpoint-every",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let overrides = ["train.schedule=zb-h1".to_string()];
    let (m, p) = (dir.join("resumed.jsonl"), dir.join("resumed-params"));
    let mut args = vec![
        "train",
        file,
        "--steps",
        "7",
        "--checkpoint-dir",
        ckpt,
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
        "--save-params",
        p.to_str().unwrap(),
    ];
    for o in &overrides {
        args.extend(["--set", o.as_str()]);
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let (ref_losses, ref_params) = run_with_outputs(&dir, "reference", "reference", file, "7", &[]);
    let resumed = losses(&m);
    assert_eq!(resumed.len(), 3, "steps 5 to 7 after resuming at 4");
    assert_same(
        "interleaved → zb-h1 resume",
        (&resumed, &load_dir(&p).unwrap()),
        (&ref_losses[4..], &ref_params),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Interleaving on 4 ranks (8 chunks) of a model `layers` deepens, with and without
/// recomputation, against the reference of that same model.
fn interleaved_on_four_ranks(test: &str, file: &str, steps: &str, layers: &str) {
    let dir = tmp(test);
    let model = format!("model.layers={layers}");
    let (ref_losses, ref_params) = run_with_outputs(
        &dir,
        "reference",
        "reference",
        file,
        steps,
        std::slice::from_ref(&model),
    );
    assert_learns(&dir, test, file, std::slice::from_ref(&model), 0.9);
    let hosts = r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu","cpu","cpu"]}]"#;
    for recompute in [false, true] {
        let name = format!("interleaved-k4-rc{recompute}");
        let overrides = [
            model.clone(),
            hosts.to_string(),
            "partition.stages=4".into(),
            "train.schedule=interleaved-1f1b".into(),
            format!("train.recompute={recompute}"),
        ];
        let (losses, params) = run_with_outputs(&dir, &name, "train", file, steps, &overrides);
        assert_same(
            &format!("{test} {name}"),
            (&losses, &params),
            (&ref_losses, &ref_params),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deeper_mlp_with_dropout_interleaved_on_four_ranks_equals_the_reference() {
    interleaved_on_four_ranks(
        "sched-mlp-deep",
        "topologies/quickstart.toml",
        "4",
        r#"[{kind="linear",out=128},{kind="relu"},{kind="dropout",p=0.1},{kind="linear",out=128},{kind="relu"},{kind="linear",out=128},{kind="relu"},{kind="linear",out=128},{kind="relu"},{kind="linear",out=10}]"#,
    );
}

#[test]
fn deeper_transformer_lm_interleaved_on_four_ranks_equals_the_reference() {
    let block = r#"{kind="transformer_block",heads=4,ff=256}"#;
    interleaved_on_four_ranks(
        "sched-lm-deep",
        "topologies/transformer-lm.toml",
        "3",
        &format!(
            r#"[{{kind="embedding",vocab=64,dim=64}},{b},{b},{b},{b},{b},{{kind="layer_norm"}},{{kind="linear",out=64}}]"#,
            b = block
        ),
    );
}
