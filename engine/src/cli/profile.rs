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
    /// Also measure every layer on these compute-thread counts (e.g. 1,2,4), so the planner
    /// can weigh threads per rank against stages (`partition.threads = "auto"`).
    #[arg(long, value_name = "T,...", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub threads: Vec<u64>,
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let topo = args.topology.load()?;
    let kind = topo.hosts[0].devices[0].kind;
    let device = training_device(kind, topo.train.dtype)?;
    let repeats = args.repeats.max(1);
    let mut profile = brigade_stages::profile::profile(&topo, &device, args.warmup, repeats);
    profile.device_gflops = Some(topo.hosts[0].devices[0].speed_gflops);
    let mut counts: Vec<usize> = args.threads.iter().map(|t| *t as usize).collect();
    counts.sort_unstable();
    counts.dedup();
    counts.retain(|t| *t > 1);
    if !counts.is_empty() && kind != brigade_partitioner::DeviceKind::Cpu {
        anyhow::bail!("--threads measures CPU compute threads; {kind} is a GPU");
    }
    for &t in &counts {
        // A pool of its own: the layers' kernels run on the pool of the thread calling them.
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .with_context(|| format!("cannot start {t} threads"))?;
        let at =
            pool.install(|| brigade_stages::profile::profile(&topo, &device, args.warmup, repeats));
        for (l, m) in profile.layers.iter_mut().zip(at.layers) {
            l.at_threads.push(brigade_partitioner::ThreadTiming {
                threads: t,
                forward_ms: m.forward_ms,
                backward_ms: m.backward_ms,
            });
        }
    }
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
    for &t in &counts {
        let one: f64 = profile
            .layers
            .iter()
            .map(|l| l.forward_ms + l.backward_ms)
            .sum();
        let many: f64 = profile
            .layers
            .iter()
            .flat_map(|l| l.at_threads.iter().filter(|a| a.threads == t))
            .map(|a| a.forward_ms + a.backward_ms)
            .sum();
        println!(
            "{t} threads: forward + backward {many:.3} ms against {one:.3} ms on one ({:.2}×)",
            one / many.max(1e-9)
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
