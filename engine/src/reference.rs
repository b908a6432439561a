//! The single-process reference trainer: the whole model as the one chunk of a one-rank job,
//! run by the same [`Executor`] as every pipeline rank — the same data, init, micro-batching
//! and gradient accumulation — so there is one step loop, and every pipelined run must
//! reproduce this one.

use crate::executor::build::reference_program;
use crate::executor::core::EvalFigures;
use crate::executor::core::{CheckpointPolicy, Executor};
use crate::executor::driver::{DriveError, Progress, drive};
use crate::executor::writer::CheckpointWriter;
use crate::trace::Tracer;
use crate::transport::memory::mesh;
use brigade_partitioner::{ConfigError, Topology};
use brigade_stages::Stage;
use brigade_stages::checkpoint::CheckpointError;
use brigade_stages::data::parquet::ParquetData;
use brigade_stages::reference::StepMetrics;
use brigade_stages::{Batches, Role};
use burn::prelude::Device;
use std::path::PathBuf;
use std::time::Instant;

/// Where and how often to checkpoint, and whether to resume first.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    pub dir: Option<PathBuf>,
    /// Save after every this many steps (0: never).
    pub every: u64,
    /// Start from the newest complete checkpoint in `dir`, if any.
    pub resume: bool,
}

/// Why the reference trainer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] ConfigError),
}

/// One evaluation's figures, after `step` steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub val_loss: f64,
    /// Absent for mse models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

impl EvalMetrics {
    pub fn new(step: u64, f: &EvalFigures) -> Self {
        EvalMetrics {
            step,
            val_loss: f.loss,
            val_accuracy: f.accuracy,
        }
    }
}

/// Trains `topo`'s model until `steps` steps are done on `device`, calling `on_step` after each.
pub fn train(
    topo: &Topology,
    steps: usize,
    device: &Device,
    on_step: impl FnMut(&StepMetrics),
) -> Result<Stage, ReferenceError> {
    train_with(topo, steps, device, &Checkpointing::default(), on_step)
}

/// [`train`] with checkpoints and resume.
pub fn train_with(
    topo: &Topology,
    steps: usize,
    device: &Device,
    ckpt: &Checkpointing,
    on_step: impl FnMut(&StepMetrics),
) -> Result<Stage, ReferenceError> {
    train_evaluating(topo, steps, device, ckpt, on_step, |_| {})
}

/// [`train_with`], also evaluating on the validation data (`[eval]`), reported to `on_eval`.
pub fn train_evaluating(
    topo: &Topology,
    steps: usize,
    device: &Device,
    ckpt: &Checkpointing,
    mut on_step: impl FnMut(&StepMetrics),
    mut on_eval: impl FnMut(&EvalMetrics),
) -> Result<Stage, ReferenceError> {
    let n = topo.model.layers.len();
    let mut stage = Stage::new(topo, 0, 0..n, device);
    brigade_stages::hf::load_initial(&mut stage, topo)?;
    // The reference runs whole backwards (its program has no W instructions).
    stage.set_split_weights(false);
    if ckpt.resume
        && let Some(dir) = &ckpt.dir
        && let Some((_, path)) = brigade_stages::checkpoint::latest(dir, n)
    {
        brigade_stages::checkpoint::load(&mut stage, &path, topo.train.seed)?;
    }
    let (data, eval_mbs) = match topo.data.parquet() {
        None => (
            brigade_stages::data::open(topo, Role::BOTH, stage.step())?,
            0,
        ),
        Some(_) => {
            let d = ParquetData::open(topo, Role::BOTH, stage.step())?;
            let rows = d.facts().validation_rows as usize;
            (
                Box::new(d) as Box<dyn Batches>,
                rows.div_ceil(topo.train.microbatch_size()),
            )
        }
    };
    let mut exec = Executor::new(
        reference_program(topo, eval_mbs),
        vec![stage],
        data,
        steps as u64,
        Tracer::new(0, 0, false),
    );
    let mut writer = None;
    if let Some(dir) = &ckpt.dir {
        exec = exec.with_checkpoints(CheckpointPolicy {
            every: ckpt.every,
            chunks: 1,
            train_seed: topo.train.seed,
            data_seed: topo.data.seed,
        });
        writer = Some(CheckpointWriter::start(dir.clone(), |_, _| {}));
    }
    let mut transport = mesh(1).pop().expect("one rank");
    let mut start = Instant::now();
    drive(&mut exec, &mut transport, |p| {
        match p {
            Progress::Step {
                step,
                loss,
                grad_norm,
            } => {
                let secs = start.elapsed().as_secs_f64();
                start = Instant::now();
                on_step(&StepMetrics {
                    step: step + 1,
                    loss: loss.unwrap_or(f64::NAN),
                    step_ms: secs * 1e3,
                    samples_per_sec: topo.train.batch as f64 / secs.max(1e-9),
                    lr: Some(topo.train.lr_at(step)),
                    grad_norm,
                });
            }
            Progress::Eval { step, figures } => {
                if let Some(f) = figures {
                    on_eval(&EvalMetrics::new(step, &f));
                }
            }
            Progress::Checkpoint { step, snapshots } => {
                if let Some(w) = writer.as_mut() {
                    w.submit(step, snapshots).map_err(DriveError::Checkpoint)?;
                }
            }
        }
        Ok(())
    })?;
    if let Some(w) = writer {
        w.finish().map_err(DriveError::Checkpoint)?;
    }
    let (mut stages, _) = exec.into_parts();
    Ok(stages.pop().expect("the reference holds one chunk"))
}
