//! `brigade plan FILE [--profile P] [--json] [--out job.json]`.

use super::args::TopologyArgs;
use crate::fmt;
use crate::job::{Input, load_planned};
use anyhow::{Context, Result};
use brigade_partitioner::ScheduleKind;
use clap::Args;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Measured per-layer costs (from `brigade profile`) instead of estimates.
    #[arg(long)]
    pub profile: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the job plan here: `train`, `launch`, `stage` and `simulate` then run exactly
    /// this split (see docs/plan-file.md).
    #[arg(long, value_name = "FILE")]
    pub out: Option<String>,
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let (job, input, p) = load_planned(
        &args.topology.file,
        &args.topology.overrides,
        args.profile.as_deref(),
    )?;
    if let Some(out) = &args.out {
        std::fs::write(out, job.to_json())
            .with_context(|| format!("{out}: cannot write the job plan"))?;
        eprintln!("wrote the job plan to {out} (job {})", job.hash_hex());
    }
    if args.json {
        let mut v = serde_json::to_value(&p.plan)?;
        v["alternatives"] = serde_json::to_value(&p.alternatives)?;
        if !p.shapes.is_empty() {
            v["shapes"] = serde_json::to_value(&p.shapes)?;
        }
        if let Some(d) = job.plan.data {
            v["data"] = serde_json::to_value(d)?;
        }
        if !p.topo.model.is_chain() {
            let edges: Vec<serde_json::Value> = p
                .crossings()
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "from_chunk": x.from,
                        "to_chunk": x.to,
                        "layer": x.tensor,
                        "name": p.graph.layer(x.tensor).name,
                        "bytes": p.edge_bytes(x),
                    })
                })
                .collect();
            v["edges"] = serde_json::Value::Array(edges);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", super::plan_text::render(&p));
        if !p.shapes.is_empty() {
            print!("{}", crate::shape::render(&p.shapes, &p.topo.train));
        }
        if let (Some(d), Some(src)) = (job.plan.data, job.topo.data.parquet()) {
            println!(
                "data: {} — {} training rows{}",
                src.path,
                d.train_rows,
                if job.evaluates() {
                    format!(
                        ", {} validation rows ({} micro-batches per evaluation)",
                        d.validation_rows,
                        job.eval_microbatches()
                    )
                } else {
                    String::new()
                }
            );
        }
        if input == Input::Topology {
            print!(
                "{}",
                compare_schedules(
                    &args.topology.file,
                    &args.topology.overrides,
                    args.profile.as_deref()
                )
            );
        }
    }
    Ok(())
}

/// Every schedule, with and without recomputation, planned afresh on the user's model (each
/// gets its own best split): simulated step, bubble and memory per rank side by side, or why a
/// schedule cannot run this model. Only for a topology (a job plan file is never re-planned).
pub(crate) fn compare_schedules(file: &str, given: &[String], profile: Option<&str>) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "\nschedules on this model (each with its own best split; simulated step and bubble, memory per rank):\n",
    );
    for schedule in ScheduleKind::ALL {
        for recompute in [false, true] {
            let mut overrides = given.to_vec();
            overrides.push(format!("train.schedule={}", schedule.name()));
            overrides.push(format!("train.recompute={recompute}"));
            if !schedule.needs().round_robin_chunks {
                overrides.push("partition.chunks_per_rank=1".into());
            }
            let name = format!(
                "{}{}",
                schedule.name(),
                if recompute { " + recompute" } else { "" }
            );
            match load_planned(file, &overrides, profile) {
                Ok((_, _, v)) => {
                    let ranks = v.sim.stages.len();
                    let mut mem = vec![0u64; ranks];
                    for (c, st) in v.plan.stages.iter().enumerate() {
                        mem[v.chunk_rank[c]] += st.memory_bytes;
                    }
                    let mem: Vec<String> = mem.into_iter().map(fmt::bytes).collect();
                    // The simulated idle share, averaged over the ranks.
                    let bubble = v.sim.stages.iter().map(|r| r.bubble_fraction).sum::<f64>()
                        / ranks.max(1) as f64;
                    let _ = writeln!(
                        s,
                        "  {name:<28} step {:>10}  bubble {:>5.1}%  [{}]",
                        fmt::ms(v.plan.step_ms),
                        bubble * 100.0,
                        mem.join(", ")
                    );
                }
                Err(e) if e.key() == Some("partition") => {
                    let _ = writeln!(s, "  {name:<28} does not fit memory");
                }
                Err(e) => {
                    // This model or topology cannot run the schedule (e.g. interleaving needs
                    // micro-batches in multiples of the stages); say why in a few words.
                    let _ = writeln!(s, "  {name:<28} n/a: {}", e.reason());
                }
            }
        }
    }
    s
}
