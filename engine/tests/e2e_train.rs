//! The central test: pipelined training over sockets with real stage processes gives the same
//! loss at every step and the same final parameters as single-process training.

mod common;

use brigade_engine::params_io::load_dir;
use common::*;

const REL: f64 = 1e-5;

fn compare(test: &str, file: &str, steps: &str, overrides: &[&str]) {
    let dir = tmp(test);
    let (tm, rm) = (dir.join("train.jsonl"), dir.join("ref.jsonl"));
    let (tp, rp) = (dir.join("train-params"), dir.join("ref-params"));
    let sets: Vec<&str> = overrides.iter().flat_map(|o| ["--set", o]).collect();
    let mut args = vec![
        "train",
        file,
        "--steps",
        steps,
        "--metrics",
        tm.to_str().unwrap(),
        "--save-params",
        tp.to_str().unwrap(),
    ];
    args.extend(&sets);
    let out = run(&args);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let mut args = vec![
        "reference",
        file,
        "--steps",
        steps,
        "--metrics",
        rm.to_str().unwrap(),
        "--save-params",
        rp.to_str().unwrap(),
    ];
    args.extend(&sets);
    let out = run(&args);
    assert!(out.status.success(), "reference failed: {}", stderr(&out));

    let (a, b) = (losses(&tm), losses(&rm));
    assert_eq!(a.len(), steps.parse::<usize>().unwrap());
    let (pa, pb) = (load_dir(&tp).unwrap(), load_dir(&rp).unwrap());
    assert_same(test, (&a, &pa), (&b, &pb));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mlp_with_dropout_2_stages_gpipe() {
    compare(
        "mlp2g",
        "topologies/quickstart.toml",
        "6",
        &["train.schedule=gpipe"],
    );
}

#[test]
fn mlp_with_dropout_2_stages_1f1b() {
    compare(
        "mlp2f",
        "topologies/quickstart.toml",
        "6",
        &["train.schedule=1f1b"],
    );
}

#[test]
fn mlp_with_dropout_4_stages_both_schedules() {
    let four = r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu","cpu","cpu"]}]"#;
    compare(
        "mlp4g",
        "topologies/quickstart.toml",
        "5",
        &[four, "partition.stages=4", "train.schedule=gpipe"],
    );
    compare(
        "mlp4f",
        "topologies/quickstart.toml",
        "5",
        &[
            four,
            "partition.stages=4",
            "train.schedule=1f1b",
            "train.optimizer=sgd",
            "train.momentum=0.9",
            "train.lr=0.05",
        ],
    );
}

#[test]
fn transformer_lm_4_stages_both_schedules() {
    compare(
        "lm4f",
        "topologies/transformer-lm.toml",
        "3",
        &["train.schedule=1f1b"],
    );
    compare(
        "lm4g",
        "topologies/transformer-lm.toml",
        "3",
        &["train.schedule=gpipe", "partition.method=uniform"],
    );
}

#[test]
fn transformer_lm_2_stages() {
    let two = r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu"]}]"#;
    compare(
        "lm2",
        "topologies/transformer-lm.toml",
        "3",
        &[two, "partition.stages=2"],
    );
}

#[test]
fn two_launchers_on_two_loopback_hosts_match_the_reference() {
    let dir = tmp("launch");
    let port = test_port(0);
    let f = &two_host_topology("launch-topology", port, "127.0.0.2", port);
    let (mb, rm) = (dir.join("b.jsonl"), dir.join("ref.jsonl"));
    let a = brigade()
        .args([
            "launch", f, "--host", "a", "--steps", "8", "--run-id", "test-job",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let b = run(&[
        "launch",
        f,
        "--host",
        "b",
        "--steps",
        "8",
        "--run-id",
        "test-job",
        "--metrics",
        mb.to_str().unwrap(),
    ]);
    let a = a.wait_with_output().unwrap();
    assert!(
        a.status.success() && b.status.success(),
        "launch failed:\n{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    assert!(
        run(&[
            "reference",
            f,
            "--steps",
            "8",
            "--metrics",
            rm.to_str().unwrap()
        ])
        .status
        .success()
    );
    let (x, y) = (losses(&mb), losses(&rm));
    assert_eq!(x.len(), 8);
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            ((p - q) / q).abs() <= REL,
            "step {}: {p} vs reference {q}",
            i + 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_is_chrome_trace_events_per_stage() {
    let dir = tmp("trace");
    let t = dir.join("trace.json");
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--steps",
        "3",
        "--trace",
        t.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&t).unwrap()).unwrap();
    let events: Vec<&serde_json::Value> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    let count = |pid: u64, name: &str| {
        events
            .iter()
            .filter(|e| e["pid"] == pid && e["name"] == name)
            .count()
    };
    // 3 steps × 8 micro-batches on each stage.
    for pid in [0, 1] {
        assert_eq!(count(pid, "forward"), 24);
        assert_eq!(count(pid, "backward"), 24);
        assert_eq!(count(pid, "optimizer"), 3);
    }
    assert_eq!(count(0, "send"), 24, "stage 0 sends 24 activations");
    assert_eq!(count(1, "send"), 24, "stage 1 sends 24 gradients");
    assert!(count(1, "recv") > 0);
    for e in &events {
        assert!(
            e["ts"].as_u64().unwrap() > 1_600_000_000_000_000,
            "ts must be µs since the epoch"
        );
        assert!(
            e["dur"].is_u64() && e["args"]["step"].is_u64() && e["args"]["mb"].is_u64(),
            "{e}"
        );
    }
    // One clock: stage 1's first forward cannot start before stage 0's first forward ends.
    let first = |pid: u64| {
        events
            .iter()
            .filter(|e| e["pid"] == pid && e["name"] == "forward")
            .map(|e| e["ts"].as_u64().unwrap())
            .min()
            .unwrap()
    };
    assert!(first(1) >= first(0));
    let _ = std::fs::remove_dir_all(&dir);
}
