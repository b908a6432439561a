//! The single-process reference trainer: the whole model as one stage, the same data, init,
//! micro-batching and gradient accumulation as a pipeline. Every pipelined run must reproduce it.

use crate::data::SyntheticData;
use crate::stage::{Stage, StageError};
use brigade_partitioner::Topology;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One line of a metrics JSONL file (the format `reference` and `train` both write).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// 1-based step number.
    pub step: u64,
    /// Mean loss over the step's batch.
    pub loss: f64,
    pub step_ms: f64,
    pub samples_per_sec: f64,
}

/// Runs one training step of `stage` (holding the whole model) over all micro-batches.
/// Returns the batch's mean loss.
pub fn reference_step(
    stage: &mut Stage,
    data: &SyntheticData,
    microbatches: usize,
) -> Result<f64, StageError> {
    let step = stage.step();
    let device = stage.device().clone();
    let mut total = 0.0;
    for mb in 0..microbatches as u64 {
        stage.forward(mb, data.inputs(step, mb, &device))?;
        let (l, _) = stage.backward_loss(mb, &data.targets(step, mb, &device))?;
        total += l as f64;
    }
    stage.optimizer_step()?;
    Ok(total / microbatches as f64)
}

/// Trains `topo`'s model for `steps` steps on `device`, calling `on_step` after each.
pub fn train_reference(
    topo: &Topology,
    steps: usize,
    device: &Device,
    mut on_step: impl FnMut(&StepMetrics),
) -> Result<Stage, StageError> {
    let mut stage = Stage::new(topo, 0, 0..topo.model.layers.len(), device);
    let data = SyntheticData::new(topo);
    for _ in 0..steps {
        let start = Instant::now();
        let loss = reference_step(&mut stage, &data, topo.train.microbatches)?;
        let secs = start.elapsed().as_secs_f64();
        on_step(&StepMetrics {
            step: stage.step(),
            loss,
            step_ms: secs * 1e3,
            samples_per_sec: topo.train.batch as f64 / secs,
        });
    }
    Ok(stage)
}
