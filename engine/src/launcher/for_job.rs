//! From a job to what a supervisor starts: the ranks of a host (or all of them), checked
//! before any process starts — the host exists and runs ranks, this build can drive their
//! devices — with the flags every rank gets.

use super::spec::LaunchSpec;
use crate::identity::{fresh_run_id, parse_run_id};
use crate::job::{Input, Job};
use crate::runtime::CheckpointOptions;
use anyhow::Result;
use brigade_partitioner::{ConfigError, error::did_you_mean};
use brigade_stages::device::DeviceUnavailable;

/// How `train` and `launch` run their ranks (their flags, as plain data).
#[derive(Clone)]
pub struct LaunchOptions {
    /// The file the user gave.
    pub file: String,
    /// `--set` overrides of a topology.
    pub overrides: Vec<String>,
    pub checkpoint: CheckpointOptions,
    /// Train until this many steps are done (default: train.steps).
    pub steps: Option<usize>,
    pub metrics: Option<String>,
    pub save_params: Option<String>,
    pub trace: Option<String>,
    /// `--report FILE`: the HTML report, refreshed at evaluations and written at the end.
    pub report: Option<String>,
    /// The MLflow run this launch logs to (when it runs the last rank).
    pub tracker: Option<crate::tracking::TrackerHandle>,
    pub secret_file: Option<String>,
    pub peer_timeout: u64,
    pub connect_timeout: u64,
}

/// The launch of `job`'s ranks on `host` (every rank when None), checked: the host exists and
/// runs ranks, and this build can drive their devices.
pub fn spec_for_job(
    opts: &LaunchOptions,
    job: Job,
    input: Input,
    host: Option<&str>,
    run_id: Option<&str>,
) -> Result<LaunchSpec> {
    let stages = ranks_on(&job, host)?;
    check_devices(&job, input, host)?;
    warn_shared_cores(&job, host);
    let topo = &job.topo;
    let run_id = match host {
        None => fresh_run_id(),
        Some(_) => parse_run_id(job.hash, run_id),
    };
    let last_chunk = job.chunks().len() - 1;
    Ok(LaunchSpec {
        file: opts.file.clone(),
        stages,
        total_stages: job.ranks(),
        last_stage: job.chunk_rank[last_chunk],
        steps: opts.steps.unwrap_or(topo.train.steps) as u64,
        batch: topo.train.batch,
        run_id,
        local: host.is_none(),
        metrics: opts.metrics.clone(),
        append_metrics: false,
        trace: opts.trace.clone(),
        report: opts.report.clone(),
        tracker: opts.tracker.clone(),
        save_params: opts.save_params.clone(),
        extra_args: opts
            .checkpoint
            .to_args()
            .into_iter()
            .chain(
                opts.secret_file
                    .iter()
                    .flat_map(|f| ["--secret-file".to_string(), f.clone()]),
            )
            .collect(),
        peer_timeout: opts.peer_timeout,
        connect_timeout: opts.connect_timeout,
        job,
    })
}

/// The ranks the plan puts on `host` (all when None), with their hosts; the host must exist
/// and run some.
fn ranks_on(job: &Job, host: Option<&str>) -> Result<Vec<(usize, String)>> {
    let topo = &job.topo;
    if let Some(h) = host
        && !topo.hosts.iter().any(|x| x.name == h)
    {
        let names: Vec<&str> = topo.hosts.iter().map(|x| x.name.as_str()).collect();
        return Err(ConfigError::invalid(
            &job.file,
            "--host",
            format!("no host named \"{h}\""),
            format!(
                "Use one of: {}.{}",
                names.join(", "),
                did_you_mean(h, &names)
            ),
        )
        .into());
    }
    let stages: Vec<(usize, String)> = (0..job.ranks())
        .map(|r| (r, job.host_name(r).to_string()))
        .filter(|(_, name)| host.is_none_or(|h| h == name))
        .collect();
    if stages.is_empty() {
        return Err(ConfigError::invalid(
            &job.file,
            "--host",
            format!(
                "the plan puts no rank on host \"{}\"",
                host.unwrap_or_default()
            ),
            "Start launchers only on hosts that run ranks.",
        )
        .into());
    }
    Ok(stages)
}

/// A device this build cannot drive is bad input, reported before any process starts.
fn check_devices(job: &Job, input: Input, host: Option<&str>) -> Result<()> {
    let topo = &job.topo;
    for (r, p) in job.places.iter().enumerate() {
        let h = &topo.hosts[p.host];
        if host.is_none_or(|n| n == h.name)
            && let Err(e) =
                brigade_stages::device::check_schedule(topo.device(p).kind, topo.train.schedule)
                    .and_then(|()| {
                        brigade_stages::device::training_device(
                            topo.device(p).kind,
                            topo.train.dtype,
                        )
                    })
        {
            let hint = match e {
                DeviceUnavailable::NotBuilt { .. } => {
                    "Rebuild with `cargo build --release -p brigade-engine --features cuda`, or use \"cpu\"."
                }
                DeviceUnavailable::HalfOnCpu { .. } | DeviceUnavailable::NotExactOnGpu { .. } => {
                    "See docs/gpu.md."
                }
                DeviceUnavailable::NoGpu { .. } => {
                    "Run this rank on a machine with that GPU, or give it another device."
                }
            };
            return Err(ConfigError::invalid(
                &job.file,
                match input {
                    Input::Topology => format!("hosts[{}].devices[{}]", p.host, p.device),
                    Input::Plan => format!("ranks[{r}].device"),
                },
                format!("stage {r}: {e}"),
                hint,
            )
            .into());
        }
    }
    Ok(())
}

/// Each rank computes on its threads (one unless the plan says more); more threads than a
/// host's cores would make them take turns.
fn warn_shared_cores(job: &Job, host: Option<&str>) {
    for (h, host_def) in job.topo.hosts.iter().enumerate() {
        let ranks = job.places.iter().filter(|p| p.host == h);
        let here: usize = ranks.map(|p| job.topo.threads(p)).sum();
        let cores = host_def
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if here > cores && (host.is_none() || host == Some(host_def.name.as_str())) {
            crate::note!(
                "warning: host {}'s stages compute on {here} threads but it has {cores} cores; they will share cores (set [[hosts]] threads, or use fewer stages or threads)",
                host_def.name
            );
        }
    }
}
