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

/// Where and how often to checkpoint, and whether to resume first.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    pub dir: Option<std::path::PathBuf>,
    /// Save after every this many steps (0: never).
    pub every: u64,
    /// Start from the newest complete checkpoint in `dir`, if any.
    pub resume: bool,
}

/// Why the reference trainer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

/// Trains `topo`'s model until `steps` steps are done on `device`, calling `on_step` after each.
pub fn train_reference(
    topo: &Topology,
    steps: usize,
    device: &Device,
    on_step: impl FnMut(&StepMetrics),
) -> Result<Stage, StageError> {
    match train_reference_with(topo, steps, device, &Checkpointing::default(), on_step) {
        Ok(s) => Ok(s),
        Err(ReferenceError::Stage(e)) => Err(e),
        Err(ReferenceError::Checkpoint(e)) => unreachable!("no checkpointing was asked for: {e}"),
    }
}

/// [`train_reference`] with checkpoints and resume.
pub fn train_reference_with(
    topo: &Topology,
    steps: usize,
    device: &Device,
    ckpt: &Checkpointing,
    mut on_step: impl FnMut(&StepMetrics),
) -> Result<Stage, ReferenceError> {
    let n = topo.model.layers.len();
    let mut stage = Stage::new(topo, 0, 0..n, device);
    if ckpt.resume
        && let Some(dir) = &ckpt.dir
        && let Some((_, path)) = crate::checkpoint::latest(dir, n)
    {
        crate::checkpoint::load(&mut stage, &path, topo.train.seed)?;
    }
    let data = SyntheticData::new(topo);
    while stage.step() < steps as u64 {
        let start = Instant::now();
        let loss = reference_step(&mut stage, &data, topo.train.microbatches)?;
        let secs = start.elapsed().as_secs_f64();
        on_step(&StepMetrics {
            step: stage.step(),
            loss,
            step_ms: secs * 1e3,
            samples_per_sec: topo.train.batch as f64 / secs,
        });
        if let Some(dir) = &ckpt.dir
            && ckpt.every > 0
            && stage.step().is_multiple_of(ckpt.every)
        {
            crate::checkpoint::save(&stage, dir, 1, topo.train.seed, topo.data.seed)?;
        }
    }
    Ok(stage)
}
