//! `partition.replicas = "auto"` and `partition.threads = "auto"`: the job's shape — D
//! replicas of a K-stage pipeline on at most N devices, each CPU rank on T compute threads
//! with the ranks of a host within its cores — chosen by simulated step time. Every shape
//! whose micro-batches split evenly is planned as the user's topology would be (its best
//! split, memory limits, the ring all-reduce charged on the modelled links, a rank's products
//! sped up by its threads as the profile measured); the fastest step wins (ties: fewer ranks,
//! then fewer stages, then fewer threads). The choice is recorded as `--set` overrides in the
//! job plan, so ranks never choose again, and `brigade plan` lists every shape weighed and
//! why it lost.

use crate::planning::{ShapeOption, make_plan};
use brigade_partitioner::{ConfigError, Topology};

/// Chooses replicas, stages and threads (those the topology leaves to "auto" or unsaid) for
/// `text`; returns the overrides that fix the choice and every shape weighed.
pub fn choose(
    file: &str,
    text: &str,
    overrides: &[String],
    profile: Option<&str>,
) -> Result<(Vec<String>, Vec<ShapeOption>), ConfigError> {
    let topo = brigade_partitioner::parse(file, text, overrides)?;
    let devices: usize = topo.hosts.iter().map(|h| h.devices.len()).sum();
    let mut options = Vec::new();
    for (d, k) in replicas_and_stages(&topo, devices) {
        let threads: Vec<Option<usize>> = if topo.partition.threads_auto {
            (1..=max_threads(&topo, d * k)).map(Some).collect()
        } else {
            vec![None]
        };
        for t in threads {
            let mut with = overrides.to_vec();
            with.extend(shape_overrides(&topo, d, k, t));
            let planned =
                brigade_partitioner::parse(file, text, &with).and_then(|t| make_plan(t, profile));
            options.push(match planned {
                Ok(p) => ShapeOption {
                    replicas: d,
                    stages: k,
                    threads: t,
                    speedup_measured: t.map(|t| p.costs.speedup(t).1),
                    step_ms: Some(p.sim.step_ms),
                    why_not: None,
                    chosen: false,
                },
                Err(e) => ShapeOption {
                    replicas: d,
                    stages: k,
                    threads: t,
                    speedup_measured: None,
                    step_ms: None,
                    why_not: Some(e.reason()),
                    chosen: false,
                },
            });
        }
    }
    let Some(best) = fastest(&options) else {
        return Err(nothing_runs(file, &topo, devices, &options));
    };
    options[best].chosen = true;
    let o = &options[best];
    Ok((
        shape_overrides(&topo, o.replicas, o.stages, o.threads),
        options,
    ))
}

/// The (replicas, stages) pairs to weigh: "auto" replicas weigh every D that divides the
/// micro-batches, else the topology's; stages the topology gives, else every K that fits.
fn replicas_and_stages(topo: &Topology, devices: usize) -> Vec<(usize, usize)> {
    let layers = topo.model.layers.len() / topo.partition.chunks_per_rank;
    let given = topo.partition.stages_given.then_some(topo.partition.stages);
    let m = topo.train.microbatches;
    let per_rank_multiple = topo.train.schedule.needs().microbatches_multiple_of_ranks;
    let ds: Vec<usize> = if topo.partition.replicas_auto {
        (1..=devices).filter(|d| m.is_multiple_of(*d)).collect()
    } else {
        vec![topo.partition.replicas]
    };
    let mut shapes = Vec::new();
    for d in ds {
        let ks: Vec<usize> = match given {
            Some(k) => vec![k],
            None => (1..=(devices / d).min(layers.max(1))).collect(),
        };
        for k in ks {
            if d * k <= devices && (!per_rank_multiple || (m / d).is_multiple_of(k)) {
                shapes.push((d, k));
            }
        }
    }
    shapes
}

/// The most threads every CPU rank of the first `ranks` ranks can have with each host's ranks
/// within its cores (`[[hosts]] threads`, else this machine's usable cores).
fn max_threads(topo: &Topology, ranks: usize) -> usize {
    let places = topo.all_placements();
    let here = crate::runtime::threads::usable_cores().len();
    topo.hosts
        .iter()
        .enumerate()
        .filter_map(|(h, host)| {
            let on = places[..ranks.min(places.len())]
                .iter()
                .filter(|p| {
                    p.host == h && topo.device(p).kind == brigade_partitioner::DeviceKind::Cpu
                })
                .count();
            (on > 0).then(|| host.threads.unwrap_or(here) / on)
        })
        .min()
        .unwrap_or(1)
        .max(1)
}

/// The `--set` overrides that fix a shape.
fn shape_overrides(topo: &Topology, d: usize, k: usize, t: Option<usize>) -> Vec<String> {
    let mut with = Vec::new();
    if topo.partition.replicas_auto {
        with.push(format!("partition.replicas={d}"));
    }
    with.push(format!("partition.stages={k}"));
    if let Some(t) = t {
        with.push(format!("partition.threads={t}"));
    }
    with
}

/// The fastest shape that runs (ties: fewer ranks, then fewer stages, then fewer threads).
fn fastest(options: &[ShapeOption]) -> Option<usize> {
    options
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let key = (o.replicas * o.stages, o.stages, o.threads.unwrap_or(1));
            o.step_ms.map(|s| (i, s, key))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
        .map(|(i, ..)| i)
}

fn nothing_runs(
    file: &str,
    topo: &Topology,
    devices: usize,
    options: &[ShapeOption],
) -> ConfigError {
    let reasons: Vec<String> = options
        .iter()
        .filter_map(|o| Some(format!("{}: {}", label(o), o.why_not.as_ref()?)))
        .collect();
    let key = if topo.partition.replicas_auto {
        "partition.replicas"
    } else {
        "partition.threads"
    };
    ConfigError::invalid(
        file,
        key,
        format!(
            "\"auto\" found no shape of at most {devices} devices that runs this model ({})",
            reasons.join("; ")
        ),
        "Give the devices more memory, add devices, or recompute activations (train.recompute = true).",
    )
}

/// "D × K" or "D × K × T threads".
fn label(o: &ShapeOption) -> String {
    match o.threads {
        Some(t) => format!("{} × {} × {t} thr", o.replicas, o.stages),
        None => format!("{} × {}", o.replicas, o.stages),
    }
}

/// The shapes as a table for `brigade plan`, with the choice explained.
pub fn render(options: &[ShapeOption], train: &brigade_partitioner::Train) -> String {
    use std::fmt::Write;
    let batch = train.batch;
    let threads = options.iter().any(|o| o.threads.is_some());
    let mut s = String::from(if threads {
        "\nshapes weighed (\"auto\"; replicas × stages × compute threads per rank, one rank per device):\n"
    } else {
        "\nshapes weighed (partition.replicas = \"auto\"; replicas × stages, one rank per device):\n"
    });
    for o in options {
        let assumed = if o.speedup_measured == Some(false) {
            "  (threads' speed-up assumed linear)"
        } else {
            ""
        };
        let _ = match (o.step_ms, &o.why_not) {
            (Some(ms), _) => writeln!(
                s,
                "  {} {:<14} step {:>9.2} ms  {:>10.0} samples/s{assumed}",
                if o.chosen { "→" } else { " " },
                label(o),
                ms,
                batch as f64 / ms * 1e3
            ),
            (None, Some(why)) => writeln!(s, "    {:<14} does not run: {why}", label(o)),
            (None, None) => Ok(()),
        };
    }
    if let Some(c) = options.iter().find(|o| o.chosen) {
        let threads = c.threads.map_or(String::new(), |t| {
            format!(", {t} compute thread(s) per rank")
        });
        let _ = writeln!(
            s,
            "chose {} replica(s) of a {}-stage pipeline{threads}: the fastest simulated step that fits (all-reduce and links included)",
            c.replicas, c.stages
        );
        // The planner keeps the training's micro-batches as given (they set the numbers the
        // run computes); without a pipeline they only cut the products smaller.
        if c.stages == 1 && train.microbatches > 1 {
            let _ = writeln!(
                s,
                "one stage: its {} micro-batches only make its products smaller (the planner keeps train.microbatches as given); train.microbatches = 1 computes the whole batch in larger products, often faster on CPU where its activations fit",
                train.microbatches
            );
        } else if train.microbatches > 1 && options.iter().any(|o| o.stages == 1) {
            let _ = writeln!(
                s,
                "not weighed: one stage with train.microbatches = 1 (the planner keeps the {} micro-batches as given: they set the numbers the run computes); the whole batch in larger products is often faster on CPU where its activations fit: compare with brigade reference --threads",
                train.microbatches
            );
        }
    }
    if options.iter().any(|o| o.speedup_measured == Some(false)) {
        s.push_str("threads not in the profile were assumed to speed products up linearly; measure them: brigade profile --threads 1,2 --out profile.json, then plan --profile profile.json\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(stages: usize, threads: usize, step_ms: f64, chosen: bool) -> ShapeOption {
        ShapeOption {
            replicas: 1,
            stages,
            threads: Some(threads),
            speedup_measured: Some(true),
            step_ms: Some(step_ms),
            why_not: None,
            chosen,
        }
    }

    /// A multi-stage pick says what the planner did not weigh: one stage on the whole batch.
    #[test]
    fn the_plan_names_the_whole_batch_it_did_not_weigh() {
        let text = include_str!("../../topologies/mlp-8x1024.toml");
        let train = brigade_partitioner::parse("mlp.toml", text, &[])
            .unwrap()
            .train;
        let two_stages = [option(1, 2, 134.0, false), option(2, 1, 122.0, true)];
        let said = render(&two_stages, &train);
        assert!(
            said.contains("not weighed: one stage with train.microbatches = 1"),
            "{said}"
        );
        let one_stage = [option(1, 2, 120.0, true), option(2, 1, 122.0, false)];
        let said = render(&one_stage, &train);
        assert!(!said.contains("not weighed"), "{said}");
        assert!(said.contains("one stage: its 8 micro-batches"), "{said}");
    }
}
