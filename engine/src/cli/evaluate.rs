//! `brigade evaluate FILE --checkpoint DIR [--data PATH]`: a checkpoint's validation loss and
//! accuracy, in one process (the model whole, as the reference holds it), on the topology's
//! validation data or on any Parquet data with the same columns.

use super::args::TopologyArgs;
use crate::metrics::{EvalMetrics, describe_eval};
use anyhow::{Context, Result, bail};
use brigade_partitioner::{ConfigError, DataSource, DeviceKind, Validation};
use brigade_stages::data::parquet::ParquetData;
use brigade_stages::device::training_device;
use brigade_stages::loss::{EvalFigures, eval_sums};
use brigade_stages::{Batches, Stage};
use clap::Args;
use std::path::Path;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// A checkpoint directory (`--checkpoint-dir` of a run: its newest complete checkpoint is
    /// used) or one of its `step-N` directories.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: String,
    /// Evaluate on this Parquet data (a file, a directory of part files or a glob, relative
    /// to the current directory) instead of the topology's validation data.
    #[arg(long, value_name = "PATH")]
    pub data: Option<String>,
    /// Run on this device ("cpu" or "cuda:N") instead of the topology's first device.
    #[arg(long, value_name = "DEVICE", value_parser = parse_device)]
    pub device: Option<DeviceKind>,
    /// Print one JSON object {"step", "val_loss", "val_accuracy", "rows"} instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    DeviceKind::parse(s)
        .ok_or_else(|| format!("\"{s}\" is not a device; use \"cpu\" or \"cuda:N\""))
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    let mut topo = args.topology.load()?;
    let DataSource::Parquet(source) = &mut topo.data.source else {
        return Err(ConfigError::invalid(
            &topo.file,
            "data.source",
            "is \"synthetic\": there is no validation data to evaluate on",
            "Evaluate a model trained on Parquet data ([data] source = \"parquet\").",
        )
        .into());
    };
    if let Some(d) = &args.data {
        // Given on the command line: relative to the current directory, unlike topology paths.
        let abs = std::env::current_dir()
            .context("cannot read the current directory")?
            .join(d);
        source.validation = Some(Validation::Path(abs.display().to_string()));
    } else if source.validation.is_none() {
        return Err(ConfigError::invalid(
            &topo.file,
            "data.validation",
            "missing: the topology names no validation data",
            "Add `validation = \"PATH\"` or `validation_fraction` to [data], or pass --data PATH.",
        )
        .into());
    }
    let kind = args.device.unwrap_or(topo.hosts[0].devices[0].kind);
    let device = training_device(kind, topo.train.dtype)?;
    let layers = topo.model.layers.len();
    let mut stage = Stage::new(&topo, 0, 0..layers, &device);
    brigade_stages::hf::load_initial(&mut stage, &topo)?;
    let root = Path::new(&args.checkpoint);
    let dir = match brigade_stages::checkpoint::latest(root, layers) {
        Some((_, dir)) => dir,
        None if root.is_dir() => root.to_path_buf(),
        None => bail!(
            "{}: no such checkpoint directory. Give the --checkpoint-dir of a run, or one of its step-N directories.",
            args.checkpoint
        ),
    };
    let step = brigade_stages::checkpoint::load(&mut stage, &dir, topo.train.seed)
        .with_context(|| format!("{}: cannot load the checkpoint", dir.display()))?;
    let mut data = ParquetData::open_validation(&topo)?;
    let rows = data.facts().validation_rows as usize;
    let mut sums = Vec::new();
    for mb in 0..rows.div_ceil(topo.train.microbatch_size()) as u64 {
        let input = data.eval_inputs(mb, stage.device())?;
        let out = stage.evaluate(mb, input)?;
        let target = data.eval_targets(mb, stage.device())?;
        sums.push(eval_sums(&out, &target));
    }
    let f = EvalFigures::of(sums);
    let m = EvalMetrics::new(step, &f);
    if args.json {
        let mut v = serde_json::to_value(m).expect("metrics serialise");
        v["rows"] = f.rows.into();
        println!("{v}");
    } else {
        println!(
            "checkpoint {} (step {step}) on {} rows: {}",
            dir.display(),
            f.rows,
            describe_eval(&m)
        );
    }
    Ok(())
}
