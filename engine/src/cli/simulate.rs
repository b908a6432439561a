//! `brigade simulate FILE [--profile P]`: the schedule's timeline per stage, as text.

use super::args::TopologyArgs;
use crate::fmt;
use crate::job::{Input, load_planned};
use crate::sim::{gantt, gantt_by_chunk};
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Measured per-layer costs (from `brigade profile`) instead of estimates.
    #[arg(long)]
    pub profile: Option<String>,
    /// Columns of the chart.
    #[arg(long, default_value_t = 96)]
    pub width: usize,
    /// Print the simulation as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SimulateArgs) -> Result<()> {
    let (_, input, p) = load_planned(
        &args.topology.file,
        &args.topology.overrides,
        args.profile.as_deref(),
    )?;
    let ideal = p.simulate(false)?;
    if args.json {
        let v = serde_json::json!({ "step_ms": p.sim.step_ms, "ideal_step_ms": ideal.step_ms, "stages": p.sim.stages, "spans": p.sim.spans });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let k = p.sim.stages.len();
    let chunks = p.plan.stages.len();
    println!(
        "{}: {} schedule, {} ranks, {} micro-batches ({} costs)",
        p.plan.topology,
        p.plan.schedule,
        k,
        p.plan.microbatches,
        if p.plan.measured_costs {
            "profiled"
        } else {
            "estimated"
        }
    );
    println!(
        "legend: 0-9 forward of micro-batch i (its last digit), a-z backward (a = micro-batch 0), A-Z the weight-gradient pass W of zb-h1, # optimizer, . idle\n"
    );
    if chunks > k {
        // Several chunks per rank: one row per chunk, under its rank.
        let rows = gantt_by_chunk(&p.sim, chunks, args.width.max(8));
        for r in 0..k {
            for c in (0..chunks).filter(|&c| p.chunk_rank[c] == r) {
                println!("rank {r:<2} c{c:<2}|{}|", rows[c]);
            }
        }
    } else {
        for (s, row) in gantt(&p.sim, k, args.width.max(8)).iter().enumerate() {
            println!("rank {s:<4} |{row}|");
        }
    }
    println!(
        "\n{:<6} {:>12} {:>12} {:>8} {:>10}",
        "rank", "busy", "idle", "bubble", "peak live"
    );
    for (s, r) in p.sim.stages.iter().enumerate() {
        println!(
            "{s:<6} {:>12} {:>12} {:>7.1}% {:>10}",
            fmt::ms(r.busy_ms),
            fmt::ms(r.idle_ms),
            r.bubble_fraction * 100.0,
            r.peak_live_microbatches
        );
    }
    println!(
        "\nstep {} (with links), {} with free communication",
        fmt::ms(p.sim.step_ms),
        fmt::ms(ideal.step_ms)
    );
    if input == Input::Topology {
        print!(
            "{}",
            super::plan::compare_schedules(
                &args.topology.file,
                &args.topology.overrides,
                args.profile.as_deref()
            )
        );
    }
    Ok(())
}
