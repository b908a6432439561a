//! `brigade plan`'s human-readable plan: the split, where each chunk runs, what it costs, the
//! simulated step, the edges, and the other methods weighed.

use crate::fmt;
use crate::planning::Planned;
use std::fmt::Write;

/// The human-readable plan.
pub fn render(p: &Planned) -> String {
    let ranks = p.chunk_rank.iter().max().map_or(1, |m| m + 1);
    let interleaved = p.plan.stages.len() > ranks;
    let mut s = String::new();
    header(&mut s, p, ranks, interleaved);
    table(&mut s, p, ranks, interleaved);
    summary(&mut s, p, interleaved);
    edges(&mut s, p);
    tie(&mut s, p);
    methods(&mut s, p);
    s
}

/// What was planned, how, and the replicas.
fn header(s: &mut String, p: &Planned, ranks: usize, interleaved: bool) {
    let (topo, plan) = (&p.topo, &p.plan);
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
        let costs: Vec<_> = (0..plan.stages.len()).map(|c| p.reduce_cost(c)).collect();
        let reduce: f64 = costs.iter().map(|r| r.reduce_ms).sum();
        let exposed: f64 = costs.iter().map(|r| r.exposed_ms).sum();
        let buckets: usize = costs.iter().map(|r| r.buckets).sum();
        let _ = writeln!(
            s,
            "replicas: {d} copies of this pipeline ({} ranks; replica r holds ranks r·{ranks} .. r·{ranks} + {}), each on {} of the {} micro-batches; all-reduce of the gradients in {buckets} bucket(s) of up to {} MiB, {reduce:.2} ms per step of which {exposed:.2} ms not overlapped (simulated)\n",
            d * ranks,
            ranks - 1,
            plan.microbatches / d,
            plan.microbatches,
            topo.partition.bucket_mb,
        );
    }
}

/// One line per chunk: where it runs and what it costs; with interleaving, each rank's chunks.
fn table(s: &mut String, p: &Planned, ranks: usize, interleaved: bool) {
    let (topo, plan) = (&p.topo, &p.plan);
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
            // A CPU rank on several threads shows them as its device says: "cpu:4".
            if st.threads > 1 {
                format!("{}:{}", st.device, st.threads)
            } else {
                st.device.clone()
            },
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
}

/// What the planner turned on or off, the bottleneck and the simulated step.
fn summary(s: &mut String, p: &Planned, interleaved: bool) {
    let (topo, plan) = (&p.topo, &p.plan);
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
}

/// Every tensor crossing between chunks, skips named.
fn edges(s: &mut String, p: &Planned) {
    let plan = &p.plan;
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
}

/// Tied embeddings: which ranks keep the two copies and what crosses between them.
fn tie(s: &mut String, p: &Planned) {
    let Some((e, h)) = p.topo.model.tied_layers() else {
        return;
    };
    let (g, last) = (&p.graph, p.chunk_rank.len() - 1);
    let (re, rh) = (p.chunk_rank[0], p.chunk_rank[last]);
    let how = if re == rh {
        "on one rank: their gradients are added there".to_string()
    } else {
        format!(
            "ranks {re} and {rh} each keep a copy; every step their gradients ({}) are summed between the two",
            fmt::bytes(g.layer(e).cost.params * 4)
        )
    };
    let _ = writeln!(
        s,
        "{:<14} {} and {} share one weight, {how}",
        "tied",
        g.layer(e).name,
        g.layer(h).name
    );
}

/// Peak live micro-batches, the one-device step, and the other split methods.
fn methods(s: &mut String, p: &Planned) {
    let plan = &p.plan;
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
