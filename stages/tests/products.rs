//! A transformer block's six linear products take part in the weight-gradient strategies:
//! ZB-H1's split (B computes input gradients, W the weight gradients later) trains the same
//! block as burn's one-pass backward; batched weight gradients leave products on token
//! sequences in the backward (measured: no faster, twice the peak memory; decision 0016); their
//! batching of `[rows, in]` products is tested in engine/tests/batched_weights.rs.

use brigade_partitioner::{Topology, parse};
use brigade_stages::params::max_rel_diff;
use brigade_stages::{Stage, StageError, SyntheticData};
use burn::prelude::Device;

/// Blocks only (the embedding's width is the vocabulary, so the last block's output is the
/// logits): no top-level `linear` whose products could stand in for the blocks'.
fn topo(overrides: &[&str]) -> Topology {
    let toml = r#"
        [model]
        input = [8]
        layers = [
          { kind = "embedding", vocab = 16, dim = 16 },
          { kind = "transformer_block", heads = 2, ff = 32 },
          { kind = "transformer_block", heads = 2, ff = 32 },
        ]
        [train]
        batch = 8
        microbatches = 4
        optimizer = "sgd"
        lr = 0.1
        [[hosts]]
        name = "local"
        address = "127.0.0.1"
        devices = ["cpu"]
    "#;
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    parse("blocks.toml", toml, &overrides).unwrap()
}

/// Three steps on one stage; `w_pass`: run each micro-batch's W after its backward (ZB-H1).
fn train(topo: &Topology, w_pass: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut stage = Stage::new(topo, 0, 0..3, &Device::flex());
    let data = SyntheticData::new(topo);
    let mut losses = Vec::new();
    for step in 0..3 {
        for mb in 0..4 {
            stage
                .forward(mb, data.inputs(step, mb, stage.device()))
                .unwrap();
            let target = data.targets(step, mb, stage.device());
            losses.push(stage.backward_loss(mb, &target).unwrap().0);
            if w_pass {
                stage.backward_weight(mb).unwrap();
            }
        }
        stage.optimizer_step().unwrap();
    }
    let params = stage
        .parameters()
        .into_iter()
        .flat_map(|(_, ps)| ps.into_iter().map(|p| p.values))
        .collect();
    (losses, params)
}

fn assert_close(what: &str, a: &(Vec<f32>, Vec<Vec<f32>>), b: &(Vec<f32>, Vec<Vec<f32>>)) {
    let d = max_rel_diff(&a.0, &b.0);
    assert!(d <= 1e-5, "{what}: losses differ by {d:e}");
    for (x, y) in a.1.iter().zip(&b.1) {
        let d = max_rel_diff(x, y);
        assert!(d <= 1e-5, "{what}: parameters differ by {d:e}");
    }
    assert_ne!(a.0[0], a.0[a.0.len() - 1], "{what}: the loss did not move");
}

#[test]
fn zb_h1_splits_the_blocks_products_and_matches_the_one_pass_backward() {
    let one_pass = train(&topo(&["train.batch_weight_grads=false"]), false);
    let zb = topo(&["train.schedule=zb-h1"]);
    assert_close("ZB-H1's W", &train(&zb, true), &one_pass);
    // Each block's six products were deferred: without their W the step refuses to run.
    let mut stage = Stage::new(&zb, 0, 0..3, &Device::flex());
    let data = SyntheticData::new(&zb);
    stage.forward(0, data.inputs(0, 0, stage.device())).unwrap();
    let target = data.targets(0, 0, stage.device());
    stage.backward_loss(0, &target).unwrap();
    assert_eq!(stage.deferred_products(), 12);
    let refused = stage.optimizer_step();
    assert!(
        matches!(refused, Err(StageError::StepWithLive { live: 1, .. })),
        "{refused:?}"
    );
}

#[test]
fn batched_weight_gradients_batch_row_products_only() {
    let one_pass = train(&topo(&["train.batch_weight_grads=false"]), false);
    let on = topo(&["train.batch_weight_grads=true"]);
    assert_close("batched W", &train(&on, false), &one_pass);
    // The blocks' products on token sequences stay in the backward: nothing is kept.
    let mut stage = Stage::new(&on, 0, 0..3, &Device::flex());
    let data = SyntheticData::new(&on);
    for mb in 0..2 {
        stage
            .forward(mb, data.inputs(0, mb, stage.device()))
            .unwrap();
        let target = data.targets(0, mb, stage.device());
        stage.backward_loss(mb, &target).unwrap();
    }
    assert_eq!(stage.deferred_products(), 0);
}
