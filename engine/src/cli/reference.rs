//! `brigade reference FILE [--steps N] [--metrics out.jsonl]`: the ground truth.

use super::args::TopologyArgs;
use crate::metrics::{MetricsWriter, describe_eval};
use crate::reference::{Checkpointing, train_evaluating};
use anyhow::{Context, Result};
use brigade_partitioner::DeviceKind;
use brigade_stages::device::training_device;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReferenceArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: super::args::CheckpointArgs,
    #[command(flatten)]
    pub run: super::args::RunArgs,
    /// Train on this device ("cpu" or "cuda:N") instead of the topology's first device.
    #[arg(long, value_name = "DEVICE", value_parser = parse_device)]
    pub device: Option<DeviceKind>,
    /// Compute on this many threads (default: the first device's "cpu:T" or `[partition]
    /// threads`, else one). The losses do not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub threads: Option<u64>,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    DeviceKind::parse(s)
        .ok_or_else(|| format!("\"{s}\" is not a device; use \"cpu\" or \"cuda:N\""))
}

pub fn run(args: &ReferenceArgs) -> Result<()> {
    // A topology, or a job plan's topology: the reference does not split.
    let topo = args.topology.load()?;
    let steps = args.run.steps.unwrap_or(topo.train.steps);
    let kind = args.device.unwrap_or(topo.hosts[0].devices[0].kind);
    let first = brigade_partitioner::topology::Placement { host: 0, device: 0 };
    let threads = match kind {
        DeviceKind::Cpu => args
            .threads
            .map(|t| t as usize)
            .or(topo.threads_stated(&first))
            .unwrap_or(1),
        DeviceKind::Cuda(_) => 1,
    };
    crate::runtime::threads::start(threads, None).map_err(anyhow::Error::msg)?;
    let device = training_device(kind, topo.train.dtype)?;
    let metrics = args
        .run
        .metrics
        .as_deref()
        .map(MetricsWriter::create)
        .transpose()
        .context("cannot create the metrics file")?;
    println!(
        "reference: {} ({} layers) on one {kind}{}, {steps} steps of {} samples in {} micro-batches",
        topo.file,
        topo.model.layers.len(),
        if threads > 1 {
            format!(" ({threads} threads)")
        } else {
            String::new()
        },
        topo.train.batch,
        topo.train.microbatches
    );
    let io_error = None;
    let ckpt = Checkpointing {
        dir: args.checkpoint.checkpoint_dir.as_ref().map(Into::into),
        every: args.checkpoint.checkpoint_every,
        resume: args.checkpoint.resume,
    };
    let metrics = std::cell::RefCell::new(metrics);
    let io_error = std::cell::RefCell::new(io_error);
    let stage = train_evaluating(
        &topo,
        steps,
        &device,
        &ckpt,
        |m| {
            println!(
                "step {:>5}/{steps}  loss {:.6}  {:>8.2} ms  {:>10.0} samples/s",
                m.step, m.loss, m.step_ms, m.samples_per_sec
            );
            if let Some(w) = metrics.borrow_mut().as_mut()
                && let Err(e) = w.write(m)
            {
                io_error.borrow_mut().get_or_insert(e);
            }
        },
        |e| {
            println!("validation after step {}: {}", e.step, describe_eval(e));
            if let Some(w) = metrics.borrow_mut().as_mut()
                && let Err(err) = w.write_eval(e)
            {
                io_error.borrow_mut().get_or_insert(err);
            }
        },
    )?;
    let io_error = io_error.into_inner();
    if let Some(e) = io_error {
        return Err(e).context("cannot write the metrics file");
    }
    if let Some(dir) = &args.run.save_params {
        crate::params_io::save(&stage, std::path::Path::new(dir))?;
        super::export::write_beside_params(&topo, std::path::Path::new(dir))?;
    }
    Ok(())
}
