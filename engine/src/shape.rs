//! `partition.replicas = "auto"`: the job's shape — D replicas of a K-stage pipeline on at
//! most N devices — chosen by simulated step time. Every D × K ≤ N whose micro-batches split
//! evenly is planned as the user's topology would be (its best split, memory limits, the ring
//! all-reduce charged on the modelled links); the fastest step wins (ties: fewer ranks, then
//! fewer stages). The choice is recorded as `--set` overrides in the job plan, so ranks never
//! choose again, and `brigade plan` lists every shape weighed and why it lost.

use crate::planning::{ShapeOption, make_plan};
use brigade_partitioner::ConfigError;

/// Chooses replicas (and stages, unless the topology or `overrides` set them) for `text`;
/// returns the overrides that fix the choice and every shape weighed.
pub fn choose(
    file: &str,
    text: &str,
    overrides: &[String],
    profile: Option<&str>,
) -> Result<(Vec<String>, Vec<ShapeOption>), ConfigError> {
    let topo = brigade_partitioner::parse(file, text, overrides)?;
    let devices: usize = topo.hosts.iter().map(|h| h.devices.len()).sum();
    let layers = topo.model.layers.len() / topo.partition.chunks_per_rank;
    let given = topo.partition.stages_given.then_some(topo.partition.stages);
    let m = topo.train.microbatches;
    let per_rank_multiple = topo.train.schedule.needs().microbatches_multiple_of_ranks;
    let mut options = Vec::new();
    for d in (1..=devices).filter(|d| m.is_multiple_of(*d)) {
        let ks: Vec<usize> = match given {
            Some(k) => vec![k],
            None => (1..=(devices / d).min(layers.max(1))).collect(),
        };
        for k in ks {
            if d * k > devices || (per_rank_multiple && !(m / d).is_multiple_of(k)) {
                continue;
            }
            let mut with = overrides.to_vec();
            with.extend([
                format!("partition.replicas={d}"),
                format!("partition.stages={k}"),
            ]);
            let planned =
                brigade_partitioner::parse(file, text, &with).and_then(|t| make_plan(t, profile));
            options.push(match planned {
                Ok(p) => ShapeOption {
                    replicas: d,
                    stages: k,
                    step_ms: Some(p.sim.step_ms),
                    why_not: None,
                    chosen: false,
                },
                Err(e) => ShapeOption {
                    replicas: d,
                    stages: k,
                    step_ms: None,
                    why_not: Some(e.reason()),
                    chosen: false,
                },
            });
        }
    }
    let best = options
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.step_ms.map(|s| (i, s, o.replicas * o.stages, o.stages)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)))
        .map(|(i, ..)| i);
    let Some(best) = best else {
        let reasons: Vec<String> = options
            .iter()
            .filter_map(|o| {
                let why = o.why_not.as_ref()?;
                Some(format!("{}×{}: {why}", o.replicas, o.stages))
            })
            .collect();
        return Err(ConfigError::invalid(
            file,
            "partition.replicas",
            format!(
                "\"auto\" found no shape of at most {devices} devices that runs this model ({})",
                reasons.join("; ")
            ),
            "Give the devices more memory, add devices, or recompute activations (train.recompute = true).",
        ));
    };
    options[best].chosen = true;
    let o = &options[best];
    Ok((
        vec![
            format!("partition.replicas={}", o.replicas),
            format!("partition.stages={}", o.stages),
        ],
        options,
    ))
}

/// The shapes as a table for `brigade plan`, with the choice explained.
pub fn render(options: &[ShapeOption], batch: usize) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "\nshapes weighed (partition.replicas = \"auto\"; replicas × stages, one rank per device):\n",
    );
    for o in options {
        let _ = match (o.step_ms, &o.why_not) {
            (Some(ms), _) => writeln!(
                s,
                "  {} {} × {}  step {:>9.2} ms  {:>10.0} samples/s",
                if o.chosen { "→" } else { " " },
                o.replicas,
                o.stages,
                ms,
                batch as f64 / ms * 1e3
            ),
            (None, Some(why)) => {
                writeln!(s, "    {} × {}  does not run: {why}", o.replicas, o.stages)
            }
            (None, None) => Ok(()),
        };
    }
    if let Some(c) = options.iter().find(|o| o.chosen) {
        let _ = writeln!(
            s,
            "chose {} replica(s) of a {}-stage pipeline: the fastest simulated step that fits (all-reduce and links included)",
            c.replicas, c.stages
        );
    }
    s
}
