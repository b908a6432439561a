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
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["plan", "topologies/mlp-8x1024.toml", "--json"];
        for e in extra {
            args.extend(["--set", e]);
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let memory = |v: &serde_json::Value| -> Vec<u64> {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["memory_bytes"].as_u64().unwrap())
            .collect()
    };
    let (off, on) = (memory(&plan(&[])), memory(&plan(&[ON])));
    // Every linear layer keeps 8 micro-batches × 32 rows of its input and output gradient (f32):
    // eight 1024 → 1024 layers and the 1024 → 10 head.
    let kept = 8 * 32 * 4 * (8 * (1024 + 1024) + (1024 + 10));
    assert_eq!(
        on.iter().sum::<u64>() - off.iter().sum::<u64>(),
        kept,
        "{off:?} → {on:?}"
    );
}
