//! The positional FILE of `train`, `launch`, `stage` and `simulate`: a topology (TOML), which
//! is planned here, or a job plan (JSON, from `brigade plan --out`), which is used as it is.

use super::explain::explain;
use super::{FORMAT, Job, JobPlan, TopologySource, VERSION, job_from_plan};
use crate::planning::{Planned, make_plan};
use brigade_partitioner::{ConfigError, Topology};

/// What FILE turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Topology,
    Plan,
}

/// FILE's text, and whether it is a job plan (by content: a plan is a JSON object; a topology
/// is TOML, which cannot start with `{`). A plan refuses `--set` overrides.
fn read_source(file: &str, overrides: &[String]) -> Result<(String, Input), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Io {
        file: file.to_string(),
        source,
    })?;
    if !text.trim_start().starts_with('{') {
        return Ok((text, Input::Topology));
    }
    if !overrides.is_empty() {
        return Err(ConfigError::invalid(
            file,
            "--set",
            "a job plan cannot be changed with --set (its split was planned for the topology it holds)",
            "Plan again with the overrides: `brigade plan TOPOLOGY --set ... --out FILE`.",
        ));
    }
    Ok((text, Input::Plan))
}

/// Reads FILE as a job plan or a topology and returns the job. A topology is planned with
/// `profile`'s costs, or estimates.
pub fn load_input(
    file: &str,
    overrides: &[String],
    profile: Option<&str>,
) -> Result<(Job, Input), ConfigError> {
    let (job, input, _) = load(file, overrides, profile, false)?;
    Ok((job, input))
}

/// Just the topology of FILE (a topology, or a job plan's), without planning it: for commands
/// that do not split the model (`reference`, `profile`).
pub fn load_topology(file: &str, overrides: &[String]) -> Result<Topology, ConfigError> {
    match read_source(file, overrides)? {
        (text, Input::Plan) => Ok(read_plan(file, &text)?.topo),
        (text, Input::Topology) => brigade_partitioner::parse(file, &text, overrides),
    }
}

/// [`load_input`] with the planner's explanation: for a topology, the plan just made; for a
/// plan file, its own split and placement explained with `profile`'s costs (or estimates).
pub fn load_planned(
    file: &str,
    overrides: &[String],
    profile: Option<&str>,
) -> Result<(Job, Input, Planned), ConfigError> {
    let (job, input, planned) = load(file, overrides, profile, true)?;
    Ok((job, input, planned.expect("asked for")))
}

fn load(
    file: &str,
    overrides: &[String],
    profile: Option<&str>,
    explained: bool,
) -> Result<(Job, Input, Option<Planned>), ConfigError> {
    match read_source(file, overrides)? {
        (text, Input::Plan) => {
            let job = read_plan(file, &text)?;
            let planned = explained.then(|| explain(&job, profile)).transpose()?;
            Ok((job, Input::Plan, planned))
        }
        (text, Input::Topology) => {
            let (job, planned) = plan_topology(file, text, overrides, profile)?;
            Ok((job, Input::Topology, Some(planned)))
        }
    }
}

/// Plans the topology in `text` (read from `file`).
fn plan_topology(
    file: &str,
    text: String,
    overrides: &[String],
    profile: Option<&str>,
) -> Result<(Job, Planned), ConfigError> {
    let topo = brigade_partitioner::parse(file, &text, overrides).map_err(|e| match e {
        // Neither a plan nor a topology: say what was expected.
        ConfigError::Syntax {
            file,
            line,
            column,
            message,
        } => ConfigError::Syntax {
            file,
            line,
            column,
            message: format!(
                "{message} (expected a topology in TOML, or a job plan in JSON from `brigade plan --out`)"
            ),
        },
        other => other,
    })?;
    let mut overrides = overrides.to_vec();
    let mut shapes = Vec::new();
    let topo = if topo.partition.replicas_auto || topo.partition.threads_auto {
        let (chosen, weighed) = crate::shape::choose(file, &text, &overrides, profile)?;
        overrides.extend(chosen);
        shapes = weighed;
        brigade_partitioner::parse(file, &text, &overrides)?
    } else {
        topo
    };
    // The user chose when `recompute` is written under [train] or set on the command line.
    let chosen = brigade_partitioner::key_given(&text, &overrides, "train", "recompute");
    // Batched weight gradients on by default keep every micro-batch's linear inputs: where no
    // split fits the devices with them, plan without (recorded in the overrides, so every rank
    // and `reference` of the plan do the same) before turning to recomputation.
    let batch_written =
        brigade_partitioner::key_given(&text, &overrides, "train", "batch_weight_grads");
    let fallback = topo.train.batch_weight_grads && !batch_written;
    let mut first = make_plan(topo, profile);
    let batch_off = fallback && matches!(&first, Err(e) if e.key() == Some("partition"));
    if batch_off {
        overrides.push("train.batch_weight_grads=false".into());
        first = make_plan(
            brigade_partitioner::parse(file, &text, &overrides)?,
            profile,
        );
    }
    let planned = match first {
        Ok(p) => p,
        // Memory forces recomputation: plan with it on the fewest first chunks that make a
        // split fit (the first chunks keep the most micro-batches alive under 1F1B), else on
        // every chunk, and record it among the plan's overrides so every rank does the same
        // (unless the user chose either way).
        Err(e) if !chosen && e.key() == Some("partition") => {
            let chunks = brigade_partitioner::parse(file, &text, &overrides)?
                .partition
                .chunks();
            let choices = (1..chunks)
                .map(|k| {
                    let ids: Vec<String> = (0..k).map(|c| c.to_string()).collect();
                    format!("train.recompute=[{}]", ids.join(", "))
                })
                .chain(std::iter::once("train.recompute=true".to_string()));
            let mut found = None;
            for choice in choices {
                let mut with = overrides.clone();
                with.push(choice);
                if let Ok(p) = make_plan(brigade_partitioner::parse(file, &text, &with)?, profile) {
                    found = Some((p, with));
                    break;
                }
            }
            let Some((mut p, with)) = found else {
                return Err(e);
            };
            p.auto_recompute = true;
            overrides = with;
            p
        }
        Err(e) => return Err(e),
    };
    let source = TopologySource {
        file: file.to_string(),
        toml: text,
        overrides,
    };
    let job = job_from_plan(source, &planned.topo, &planned.plan, &planned.alternatives)?;
    let mut planned = planned;
    planned.shapes = shapes;
    planned.batch_weights_off = batch_off;
    Ok((job, planned))
}

/// The job planned again from its own topology for a smaller (or other) world: `overrides` on
/// top of the plan's, and only the `[[hosts]]` named in `keep` (all when None). Every agent of
/// an elastic restart calls this with the same arguments, so they all get the same plan.
pub fn replan(
    job: &Job,
    overrides: &[String],
    keep: Option<&[String]>,
) -> Result<Job, ConfigError> {
    let src = &job.plan.topology;
    let text = match keep {
        Some(keep) => brigade_partitioner::keep_hosts(&src.file, &src.toml, keep)?,
        None => src.toml.clone(),
    };
    let mut all = src.overrides.clone();
    all.extend(overrides.iter().cloned());
    Ok(plan_topology(&src.file, text, &all, None)?.0)
}

/// The (stages, replicas) shape that fits `available` ranks, keeping the stage count when it
/// can: fewer replicas first, then fewer stages.
pub fn elastic_shape(stages: usize, replicas: usize, available: usize) -> (usize, usize) {
    if stages * replicas <= available {
        (stages, replicas)
    } else if available >= stages {
        (stages, available / stages)
    } else {
        (available.max(1), 1)
    }
}

/// Parses and validates a job plan's JSON text.
pub fn read_plan(file: &str, text: &str) -> Result<Job, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: format!("{e} (the job plan is not valid JSON: truncated or corrupt?)"),
    })?;
    // Identify the file before reading its fields, so that a plan of another version is
    // reported as such rather than as an unknown field.
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(ConfigError::invalid(
            file,
            "format",
            "this JSON file is not a brigade job plan (it has no \"format\": \"brigade-job-plan\")",
            "Give a topology (TOML) or a plan written by `brigade plan --out`.",
        ));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    let by = value.get("brigade_version").and_then(|v| v.as_str());
    let ours = env!("CARGO_PKG_VERSION");
    if version != Some(VERSION as u64) || by != Some(ours) {
        return Err(ConfigError::invalid(
            file,
            "version",
            format!(
                "the plan was written by brigade {} (plan format {}); this is brigade {ours} (plan format {VERSION})",
                by.unwrap_or("(unknown)"),
                version.map_or("(unknown)".to_string(), |v| v.to_string())
            ),
            "Write the plan again with this brigade: `brigade plan TOPOLOGY --out FILE`.",
        ));
    }
    let raw: JobPlan = serde_json::from_value(value).map_err(|e| {
        ConfigError::invalid(
            file,
            "(job plan)",
            e,
            "Give a plan written by `brigade plan --out`, or write it again.",
        )
    })?;
    raw.validate(file)
}

impl Job {
    /// The plan as pretty JSON (what `brigade plan --out` writes).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.plan).expect("a plan always serialises") + "\n"
    }
}
