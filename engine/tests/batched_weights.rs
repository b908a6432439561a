//! `train.batch_weight_grads = true`: linear layers run forward and input gradient in the CPU
//! kernel's fast orientation and compute their weight gradients once per step over every
//! micro-batch. Pipelined training with it still equals `brigade reference` with it (every
//! schedule but ZB-H1, whose W stays per micro-batch; recomputation; a graph), and it trains the
//! same model as the per-micro-batch products to rounding.

mod common;

use common::*;

const ON: &str = "train.batch_weight_grads=true";

#[test]
fn batched_weight_gradients_equal_the_reference_on_every_split_and_schedule() {
    let dir = tmp("batched-w");
    let file = "topologies/quickstart.toml";
    let want = run_with_outputs(&dir, "ref", "reference", file, "6", &[ON.into()]);
    for (k, schedule, recompute) in [
        (2, "gpipe", false),
        (2, "1f1b", false),
        (2, "1f1b", true),
        (2, "interleaved-1f1b", false),
        (4, "gpipe", false),
        (4, "1f1b", true),
    ] {
        let name = format!("{schedule}-k{k}-rc{recompute}");
        let overrides = [
            ON.to_string(),
            hosts(k),
            format!("partition.stages={k}"),
            format!("train.schedule={schedule}"),
            format!("train.recompute={recompute}"),
        ];
        let got = run_with_outputs(&dir, &name, "train", file, "6", &overrides);
        assert_same(&name, (&got.0, &got.1), (&want.0, &want.1));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn batched_weight_gradients_on_a_graph_equal_the_reference() {
    let dir = tmp("batched-w-graph");
    let file = "topologies/residual-mlp.toml";
    let want = run_with_outputs(&dir, "ref", "reference", file, "20", &[ON.into()]);
    for k in [2, 3] {
        let overrides = [ON.to_string(), format!("partition.stages={k}")];
        let got = run_with_outputs(&dir, &format!("k{k}"), "train", file, "20", &overrides);
        assert_same(
            &format!("residual k{k}"),
            (&got.0, &got.1),
            (&want.0, &want.1),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn batched_and_per_microbatch_weight_gradients_train_the_same_model() {
    // Other products, so other rounding: the same losses to 1e-5 over a few steps of SGD.
    let dir = tmp("batched-w-same");
    let file = "topologies/mlp-8x1024.toml";
    let a = run_with_outputs(&dir, "per-mb", "reference", file, "3", &[]);
    let b = run_with_outputs(&dir, "batched", "reference", file, "3", &[ON.into()]);
    assert_same("batched vs per micro-batch", (&b.0, &b.1), (&a.0, &a.1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_planner_counts_what_batched_weight_gradients_keep() {
    let plan =
        |extra: &[&str]| -> serde_json::Value { plan_of("topologies/mlp-8x1024.toml", extra) };
    let memory = |v: &serde_json::Value| -> Vec<u64> {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["memory_bytes"].as_u64().unwrap())
            .collect()
    };
    let (off, on) = (
        memory(&plan(&["train.batch_weight_grads=false"])),
        memory(&plan(&[ON])),
    );
    assert_eq!(memory(&plan(&[])), on, "on by default on CPUs");
    // Every linear layer keeps 8 micro-batches × 32 rows of its input and output gradient (f32):
    // eight 1024 → 1024 layers and the 1024 → 10 head.
    let kept = 8 * 32 * 4 * (8 * (1024 + 1024) + (1024 + 10));
    assert_eq!(
        on.iter().sum::<u64>() - off.iter().sum::<u64>(),
        kept,
        "{off:?} → {on:?}"
    );
}

fn plan_of(file: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["plan", file, "--json"];
    for e in extra {
        args.extend(["--set", e]);
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// On one device whose memory fits the model only without the kept tensors, the planner plans
/// without them (before recomputation) and records it in the plan for every rank.
#[test]
fn where_only_per_microbatch_weight_gradients_fit_the_plan_says_so() {
    let total = |v: serde_json::Value| -> u64 {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["memory_bytes"].as_u64().unwrap())
            .sum()
    };
    let one = ["partition.stages=1", "partition.method=auto"];
    fn with<'a>(one: &[&'a str], o: &'a str) -> Vec<&'a str> {
        one.iter().copied().chain([o]).collect()
    }
    let off = total(plan_of(
        "topologies/mlp-8x1024.toml",
        &with(&one, "train.batch_weight_grads=false"),
    ));
    let on = total(plan_of("topologies/mlp-8x1024.toml", &with(&one, ON)));
    assert!(on > off);
    let limit = (off + on) / 2;
    let dir = tmp("batched-w-fit");
    let plan = dir.join("job.json");
    let hosts = format!(
        r#"hosts=[{{name="local",address="127.0.0.1",devices=[{{device="cpu",memory={limit}}}]}}]"#
    );
    let mut args = vec![
        "plan",
        "topologies/mlp-8x1024.toml",
        "--out",
        plan.to_str().unwrap(),
    ];
    for o in one.iter().copied().chain([hosts.as_str()]) {
        args.extend(["--set", o]);
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let overrides = job["topology"]["overrides"].to_string();
    assert!(
        overrides.contains("train.batch_weight_grads=false") && !overrides.contains("recompute"),
        "{overrides}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("batched weight gradients turned off by the planner"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(dir);
}
