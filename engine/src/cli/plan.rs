//! `brigade plan FILE [--profile P] [--json] [--out job.json]`.

use super::TopologyArgs;
use crate::fmt;
use crate::job::{Input, load_planned};
use crate::planning::Planned;
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
        print!("{}", render(&p));
        if !p.shapes.is_empty() {
            print!("{}", crate::shape::render(&p.shapes, p.topo.train.batch));
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

/// The human-readable plan.
pub fn render(p: &Planned) -> String {
    use std::fmt::Write;
    let (topo, plan) = (&p.topo, &p.plan);
    let ranks = p.chunk_rank.iter().max().map_or(1, |m| m + 1);
    let interleaved = plan.stages.len() > ranks;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan for {} ({}): {} layers → {}, method {}, schedule {}{}, {} micro-batches of {}, {} costs\n",
        topo.file,
        topo.name,
        p.graph.len(),
        if interleaved {
            format!("{} chunks on {ranks} ranks", plan.stages.len())
        } else {
            format!("{} stages", plan.stages.len())
        },
        plan.method,
        plan.schedule,
        if topo.train.recompute {
            " with recomputation".to_string()
        } else if !topo.train.recompute_chunks.is_empty() {
            format!(
                " with recomputation on chunks {:?}",
                topo.train.recompute_chunks
            )
        } else {
            String::new()
        },
        plan.microbatches,
        topo.train.microbatch_size(),
        if plan.measured_costs {
            "profiled"
        } else {
            "estimated"
        },
    );
    let d = topo.partition.replicas;
    if d > 1 {
        let reduce: f64 = (0..plan.stages.len())
            .map(|c| p.all_reduce_ms(c, plan.stages[c].params * 4))
            .sum();
        let _ = writeln!(
            s,
            "replicas: {d} copies of this pipeline ({} ranks; replica r holds ranks r·{ranks} .. r·{ranks} + {}), each on {} of the {} micro-batches; ring all-reduce of the gradients {reduce:.2} ms per step (simulated)\n",
            d * ranks,
            ranks - 1,
            plan.microbatches / d,
            plan.microbatches,
        );
    }
    let _ = writeln!(
        s,
        "{:<5} {:<12} {:<8} {:<10} {:>9} {:>12} {:>11} {:>11} {:>11}  kinds",
        if interleaved { "chunk" } else { "stage" },
        "host",
        "device",
        "layers",
        "params",
        "fwd+bwd/mb",
        "send/mb",
        "memory",
        "sends/mb"
    );
    for (st, place) in plan.stages.iter().zip(&p.places) {
        let cap = topo.device(place).memory_bytes;
        let over = cap.is_some_and(|cap| st.memory_bytes > cap);
        let _ = writeln!(
            s,
            "{:<5} {:<12} {:<8} {:<10} {:>9} {:>12} {:>11} {:>11} {:>11}  {}",
            st.stage,
            st.host,
            st.device,
            format!("{}..{}", st.layers[0], st.layers[1]),
            fmt::count(st.params),
            fmt::ms(st.compute_ms),
            fmt::ms(st.send_ms),
            format!(
                "{}{}",
                fmt::bytes(st.memory_bytes),
                if over { "!" } else { "" }
            ),
            fmt::bytes(st.send_bytes),
            summarize_kinds(&st.kinds),
        );
        if over {
            let _ = writeln!(
                s,
                "      ! exceeds the device's {} of memory",
                fmt::bytes(cap.unwrap_or(0))
            );
        }
    }
    if interleaved {
        for r in 0..ranks {
            let held: Vec<String> = (0..plan.stages.len())
                .filter(|&c| p.chunk_rank[c] == r)
                .map(|c| c.to_string())
                .collect();
            if r == 0 {
                s.push('\n');
            }
            let _ = writeln!(
                s,
                "{:<14} rank {r} holds chunks {}",
                if r == 0 { "interleaved" } else { "" },
                held.join(", ")
            );
        }
    }
    let slowest = plan
        .stages
        .iter()
        .max_by(|a, b| (a.compute_ms + a.send_ms).total_cmp(&(b.compute_ms + b.send_ms)))
        .map_or(0, |st| st.stage);
    if p.batch_weights_off {
        let _ = writeln!(
            s,
            "\nweights        batched weight gradients turned off by the planner: with them no split fits the devices' memory (train.batch_weight_grads = true to insist)"
        );
    }
    if p.auto_recompute {
        let _ = writeln!(
            s,
            "\nrecompute      turned on by the planner{}: without it no split fits the devices' memory (train.recompute = false to refuse)",
            if topo.train.recompute {
                String::new()
            } else {
                format!(" on chunks {:?}", topo.train.recompute_chunks)
            }
        );
    }
    let _ = writeln!(
        s,
        "\nbottleneck     {} {slowest}: {} per micro-batch (compute + send)",
        if interleaved { "chunk" } else { "stage" },
        fmt::ms(plan.bottleneck_ms)
    );
    let _ = writeln!(
        s,
        "step           {} simulated ({}, {} micro-batches), schedule bubble {:.1}% = {}",
        fmt::ms(plan.step_ms),
        plan.schedule,
        plan.microbatches,
        plan.bubble_fraction * 100.0,
        if interleaved {
            "(K-1)/(v·M+K-1)"
        } else {
            "(K-1)/(M+K-1)"
        }
    );
    for (i, x) in p.crossings().iter().enumerate() {
        // A tensor other than the chunk's last output, or going past the next chunk, is a skip.
        let skip = x.to != x.from + 1 || x.tensor + 1 != plan.stages[x.from].layers[1];
        let note = if skip {
            format!(
                " (skip: the output of {}, sent straight there)",
                p.graph.layer(x.tensor).name
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{:<14} e{i}: chunk {} (rank {}) → chunk {} (rank {}), {} per micro-batch each way{note}",
            if i == 0 { "edges" } else { "" },
            x.from,
            p.chunk_rank[x.from],
            x.to,
            p.chunk_rank[x.to],
            fmt::bytes(p.edge_bytes(x)),
        );
    }
    let peaks: Vec<String> = p
        .sim
        .stages
        .iter()
        .map(|s| s.peak_live_microbatches.to_string())
        .collect();
    let _ = writeln!(
        s,
        "live           peak micro-batches alive per rank: [{}]",
        peaks.join(", ")
    );
    let _ = writeln!(
        s,
        "one device     {} per step → speed-up {:.2}×",
        fmt::ms(plan.single_device_ms),
        plan.speedup
    );
    let _ = writeln!(s, "\nmethods on this model (bottleneck per micro-batch):");
    for alt in &p.alternatives {
        let counts: Vec<String> = alt.layers_per_stage.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            s,
            "  {:<11} {:>12}  layers per stage [{}]{}",
            alt.method,
            fmt::ms(alt.bottleneck_ms),
            counts.join(", "),
            if alt.fits_memory {
                ""
            } else {
                "  (does not fit memory)"
            }
        );
    }
    s
}

/// "linear relu linear relu linear" → "2×linear, 2×relu, linear" style compression of runs.
fn summarize_kinds(kinds: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for k in kinds {
        match counts.iter_mut().find(|(n, _)| n == k) {
            Some((_, c)) => *c += 1,
            None => counts.push((k, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, c)| {
            if *c == 1 {
                k.to_string()
            } else {
                format!("{c}×{k}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
