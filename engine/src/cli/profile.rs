//! `brigade profile FILE --out profile.json`: measure every layer for the planner.

use super::args::TopologyArgs;
use anyhow::{Context, Result};
use brigade_stages::device::training_device;
use clap::Args;

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Where to write the profile JSON.
    #[arg(long)]
    pub out: String,
    /// Timed repetitions per layer (the median is kept).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Untimed warm-up runs per layer.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let topo = args.topology.load()?;
    let kind = topo.hosts[0].devices[0].kind;
    let device = training_device(kind, topo.train.dtype)?;
    let mut profile =
        brigade_stages::profile::profile(&topo, &device, args.warmup, args.repeats.max(1));
    profile.device_gflops = Some(topo.hosts[0].devices[0].speed_gflops);
    std::fs::write(&args.out, serde_json::to_string_pretty(&profile)? + "\n")
        .with_context(|| format!("{}: cannot write the profile", args.out))?;
    println!(
        "{:<24} {:>12} {:>12} {:>14} {:>12}",
        "layer", "forward ms", "backward ms", "activation B", "param B"
    );
    for l in &profile.layers {
        println!(
            "{:<24} {:>12.4} {:>12.4} {:>14} {:>12}",
            l.name, l.forward_ms, l.backward_ms, l.activation_bytes, l.param_bytes
        );
    }
    println!(
        "profiled on {kind} at micro-batch {}; wrote {}",
        topo.train.microbatch_size(),
        args.out
    );
    println!(
        "plan with it: brigade plan {} --profile {}",
        topo.file, args.out
    );
    Ok(())
}
