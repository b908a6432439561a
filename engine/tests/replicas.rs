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
    // 64 MiB holds half of the parameters and their optimizer state (40 MiB a rank at 2
    // stages), but not a replica's all-reduce buffers besides: no replicas.
    let (d, k, text) = chosen_shape(Some("64MiB"));
    assert_eq!((d, k), (1, 4), "{text}");
    assert!(
        shape_line(&text, "2 × 2").contains("does not run"),
        "{text}"
    );
    // 80 MiB holds half with its all-reduce buffers (two f32 copies of a replica rank's
    // parameters: 72 MiB a rank at 2 × 2): two replicas of a two-stage pipeline beat one
    // four-stage pipeline.
    let (d, k, text) = chosen_shape(Some("80MiB"));
    assert_eq!((d, k), (2, 2), "{text}");
    assert!(
        shape_line(&text, "4 × 1").contains("does not run"),
        "{text}"
    );
}

/// Gradients summed in many small buckets — swapped whole by two replicas, passed round a ring
/// of three, each started while the next is made (with batched weight gradients, while its
/// weight products run) — still train what the reference trains.
#[test]
fn bucketed_reductions_train_what_the_reference_trains() {
    let dir = tmp("replicas-buckets");
    let file = "topologies/quickstart.toml";
    // Six micro-batches of 8 rows: two replicas take three each, three take two.
    let batch = ["train.batch=48".to_string(), "train.microbatches=6".into()];
    let (ref_losses, ref_params) = run_with_outputs(&dir, "ref", "reference", file, "8", &batch);
    for (d, k, weights) in [(2, 2, false), (3, 1, false), (2, 1, true)] {
        let name = format!("{d}x{k}-batched-{weights}");
        let mut set = shape(d, k);
        set.extend(batch.iter().cloned());
        // 1 KiB: a bucket per linear layer of quickstart's 104 KiB of gradients.
        set.push("partition.bucket_mb=0.001".into());
        set.push(format!("train.batch_weight_grads={weights}"));
        let trace = dir.join(format!("{name}-trace.json"));
        let (losses, params) = run_traced(&dir, &name, file, &set, &trace);
        assert_same(&name, (&losses, &params), (&ref_losses, &ref_params));
        let other =
            brigade_engine::params_io::load_dir(&dir.join(format!("{name}-params/replica-1")))
                .unwrap();
        assert_eq!(other, params, "{name}: replica 1's parameters");
        // Every rank summed several buckets a step, by the algorithm its ring's size calls for.
        let text = std::fs::read_to_string(&trace).unwrap();
        let events: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = events["traceEvents"].as_array().unwrap();
        let buckets: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["name"] == "allreduce" && e["args"]["bytes"].is_u64())
            .filter(|e| e["args"]["step"] == 0)
            .collect();
        let most = (0..d * k)
            .map(|r| buckets.iter().filter(|e| e["pid"] == r).count())
            .max();
        assert!(most >= Some(2), "{name}: {buckets:?}");
        let algo = if d == 2 { "direct" } else { "ring" };
        assert!(
            buckets.iter().all(|e| e["args"]["algo"] == algo),
            "{name}: {buckets:?}"
        );
        // Each rank's transport traced its buckets' starts and the segments it summed, each
        // naming the rank at the other end.
        for r in 0..d * k {
            let reduce = events
                .iter()
                .filter(|e| e["name"] == "reduce" && e["pid"] == r && e["args"]["step"] == 0)
                .filter(|e| e["args"]["peer"].is_u64())
                .count();
            assert!(reduce >= 2, "{name}: rank {r} traced {reduce} reduce spans");
        }
    }
}

/// `train` with `--trace`, returning its losses and parameters like `run_with_outputs`.
fn run_traced(
    dir: &std::path::Path,
    name: &str,
    file: &str,
    set: &[String],
    trace: &std::path::Path,
) -> (Vec<f64>, Params) {
    let (m, p) = (
        dir.join(format!("{name}.jsonl")),
        dir.join(format!("{name}-params")),
    );
    let mut args = vec![
        "train",
        file,
        "--steps",
        "8",
        "--trace",
        trace.to_str().unwrap(),
    ];
    args.extend([
        "--metrics",
        m.to_str().unwrap(),
        "--save-params",
        p.to_str().unwrap(),
    ]);
    for s in set {
        args.extend(["--set", s.as_str()]);
    }
    let out = run(&args);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap())
}

/// The replica that dies in the middle of summing gradients — its first segment sent, its
/// peer waiting for the rest — ends the job within 10 s, naming it.
#[test]
fn a_replica_killed_mid_reduction_fails_the_job_within_10_s() {
    let mut args = vec!["train", "topologies/quickstart.toml", "--steps", "1000000"];
    let set = shape(2, 1);
    for s in &set {
        args.extend(["--set", s.as_str()]);
    }
    let mut child = brigade()
        .args(&args)
        .env("BRIGADE_FAILPOINT", "allreduce:1:3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = collect_stderr(&mut child);
    let status = exit_within(
        &mut child,
        std::time::Duration::from_secs(10),
        "the job did not end within 10 s of a replica dying mid-reduction",
    );
    assert!(!status.success());
    let err = err.join().unwrap();
    assert!(err.contains("fired in step 3's all-reduce"), "{err}");
    assert!(err.contains("stage 1 (host local"), "{err}");
}

/// Killed mid-reduction under `--max-restarts`, the job resumes from its checkpoint and ends
/// with the losses and parameters of an uninterrupted run, to the bit.
#[test]
fn a_reduction_cut_short_resumes_exactly() {
    let dir = tmp("replicas-restart");
    let file = "topologies/quickstart.toml";
    let set = shape(2, 1);
    let (want, want_params) = run_with_outputs(&dir, "whole", "train", file, "8", &set);
    let (m, p, ck) = (
        dir.join("cut.jsonl"),
        dir.join("cut-params"),
        dir.join("ck"),
    );
    let mut args = vec!["train", file, "--steps", "8", "--max-restarts", "1"];
    args.extend(["--restart-backoff", "0.1", "--checkpoint-every", "2"]);
    args.extend(["--checkpoint-dir", ck.to_str().unwrap()]);
    args.extend([
        "--metrics",
        m.to_str().unwrap(),
        "--save-params",
        p.to_str().unwrap(),
    ]);
    for s in &set {
        args.extend(["--set", s.as_str()]);
    }
    let mark = dir.join("fired");
    let out = brigade()
        .args(&args)
        .env("BRIGADE_FAILPOINT", "allreduce:1:5")
        .env("BRIGADE_FAILPOINT_ONCE", &mark)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mark.exists(), "the failure never fired: {}", stderr(&out));
    let params = brigade_engine::params_io::load_dir(&p).unwrap();
    let got = losses(&m);
    assert_eq!(got[got.len() - 4..], want[4..], "losses after the restart");
    assert_eq!(params, want_params, "parameters");
}
