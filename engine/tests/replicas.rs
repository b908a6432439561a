//! Data and pipeline parallelism together: D replicas of a K-rank pipeline, each training on
//! its share of every batch and summing gradients with a ring all-reduce, train what
//! `brigade reference` trains (relative 1e-5: the replicas' sums run in another order than
//! the reference's accumulation), every replica ends with the same parameters, a checkpoint
//! of one shape resumes on another, and a killed replica fails the job.

mod common;

use common::*;

fn shape(replicas: usize, stages: usize) -> Vec<String> {
    vec![
        hosts(replicas * stages),
        format!("partition.replicas={replicas}"),
        format!("partition.stages={stages}"),
    ]
}

#[test]
fn replicated_pipelines_train_what_the_reference_trains() {
    let dir = tmp("replicas");
    let file = "topologies/quickstart.toml";
    let every = ["eval.every=6".to_string()];
    let (ref_losses, ref_params) = run_with_outputs(&dir, "ref", "reference", file, "12", &every);
    let ref_evals = evals(&dir.join("ref.jsonl"));
    for (d, k, schedule) in [(2, 2, "1f1b"), (2, 2, "gpipe"), (2, 1, "1f1b")] {
        let name = format!("{d}x{k}-{schedule}");
        let mut set = shape(d, k);
        set.push(format!("train.schedule={schedule}"));
        set.push("eval.every=6".into());
        let (losses, params) = run_with_outputs(&dir, &name, "train", file, "12", &set);
        assert_same(&name, (&losses, &params), (&ref_losses, &ref_params));
        // Every replica holds the same parameters, to the bit.
        let other =
            brigade_engine::params_io::load_dir(&dir.join(format!("{name}-params/replica-1")))
                .unwrap();
        assert_eq!(other, params, "{name}: replica 1's parameters");
        let got = evals(&dir.join(format!("{name}.jsonl")));
        assert_eq!(got.len(), 2, "{name}");
        for (g, w) in got.iter().zip(&ref_evals) {
            assert_eq!((g.0, g.2), (w.0, w.2), "{name}: step and accuracy");
            assert!(((g.1 - w.1) / w.1).abs() <= 1e-5, "{name}: {g:?} vs {w:?}");
        }
    }
}

#[test]
fn a_checkpoint_of_two_replicas_resumes_on_one_pipeline_of_three() {
    let dir = tmp("replicas-resume");
    let file = "topologies/quickstart.toml";
    let ck = dir.join("ck");
    let ck = ck.to_str().unwrap();
    let mut first = vec!["train", file, "--steps", "6", "--checkpoint-dir", ck];
    first.extend(["--checkpoint-every", "3"]);
    let set = shape(2, 2);
    for s in &set {
        first.extend(["--set", s.as_str()]);
    }
    let out = run(&first);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = dir.join("resumed.jsonl");
    let mut resumed = vec![
        "train",
        file,
        "--steps",
        "12",
        "--checkpoint-dir",
        ck,
        "--resume",
    ];
    resumed.extend(["--metrics", m.to_str().unwrap()]);
    let three = shape(1, 3);
    for s in &three {
        resumed.extend(["--set", s.as_str()]);
    }
    let out = run(&resumed);
    assert!(out.status.success(), "{}", stderr(&out));
    let (want, _) = run_with_outputs(&dir, "ref", "reference", file, "12", &[]);
    let got = losses(&m);
    assert_eq!(got.len(), 6);
    for (a, b) in got.iter().zip(&want[6..]) {
        assert!(
            ((a - b) / b).abs() <= 1e-5,
            "resumed {got:?} vs {:?}",
            &want[6..]
        );
    }
}

#[test]
fn a_killed_replica_fails_the_job_within_10_s() {
    let mut args = vec!["train", "topologies/quickstart.toml", "--steps", "1000000"];
    let set = shape(2, 1);
    for s in &set {
        args.extend(["--set", s.as_str()]);
    }
    let rest = kill_rank_1_of(&args);
    assert!(rest.contains("stage 1 (host local"), "{rest}");
}

/// The shape `brigade plan` chooses for mlp-8x1024 on four CPU devices of `memory` (each).
fn chosen_shape(memory: Option<&str>) -> (usize, usize, String) {
    let device = match memory {
        Some(m) => format!(r#"{{device="cpu",memory="{m}"}}"#),
        None => "\"cpu\"".into(),
    };
    let devices = vec![device; 4].join(",");
    let out = run(&[
        "plan",
        "topologies/mlp-8x1024.toml",
        "--set",
        &format!(r#"hosts=[{{name="local",address="127.0.0.1",devices=[{devices}]}}]"#),
        "--set",
        r#"partition={replicas="auto"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("chose "))
        .unwrap_or_else(|| panic!("no choice explained in:\n{text}"))
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let d = words[1].parse().unwrap();
    let k = words[5].trim_end_matches("-stage").parse().unwrap();
    (d, k, text)
}

/// The line of the plan's shapes table that weighs `shape` ("D × K").
fn shape_line<'a>(text: &'a str, shape: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.trim_start()
                .trim_start_matches("→ ")
                .starts_with(&format!("{shape} "))
        })
        .unwrap_or_else(|| panic!("shape {shape} not weighed in:\n{text}"))
}

#[test]
fn the_planner_chooses_the_shape_by_simulated_step_and_memory() {
    // The whole model fits every device: four copies, no pipeline (no bubble; the gradients'
    // all-reduce costs less than a pipeline's fill and drain).
    let (d, k, text) = chosen_shape(None);
    assert_eq!((d, k), (4, 1), "{text}");
    assert!(text.contains("→ 4 × 1"), "{text}");
    // 30 MiB holds a quarter of the model (20 MiB a rank at 4 stages, 27 at 3, 40 at 2): only
    // a pipeline fits, so the planner takes the fastest pipeline.
    let (d, k, text) = chosen_shape(Some("30MiB"));
    assert_eq!((d, k), (1, 4), "{text}");
    assert!(
        shape_line(&text, "1 × 1").contains("does not run"),
        "{text}"
    );
    // 48 MiB holds half: two replicas of a two-stage pipeline beat one four-stage pipeline.
    let (d, k, text) = chosen_shape(Some("48MiB"));
    assert_eq!((d, k), (2, 2), "{text}");
    assert!(
        shape_line(&text, "4 × 1").contains("does not run"),
        "{text}"
    );
}
