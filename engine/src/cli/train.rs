//! `brigade train FILE` (every stage on this host) and `brigade launch FILE --host NAME`
//! (one host's stages of a multi-host run).

use super::TopologyArgs;
use crate::identity::{fresh_run_id, parse_run_id};
use crate::job::{Input, load_input};
use crate::launcher::{LaunchSpec, RestartPolicy, launch, launch_with_restarts};
use anyhow::Result;
use brigade_partitioner::{ConfigError, error::did_you_mean};
use brigade_stages::device::DeviceUnavailable;
use clap::Args;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: super::CheckpointArgs,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Write a Chrome trace (open it in https://ui.perfetto.dev).
    #[arg(long)]
    pub trace: Option<String>,
    /// File holding the job secret, passed to every stage (default: $BRIGADE_SECRET_FILE, then
    /// $BRIGADE_SECRET, which stages inherit).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<String>,
    /// Seconds a peer may stay silent before the job fails.
    #[arg(long, default_value_t = 5)]
    pub peer_timeout: u64,
    /// Seconds to wait for every stage to start.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
}

/// Restarting a failed job: `train` (every rank is its child), `launch` and `stage` (agents that
/// meet at the rendezvous before every attempt).
#[derive(Args, Debug, Clone)]
pub struct RestartArgs {
    /// When a rank dies, hangs or loses its peer: stop every rank and start again from the
    /// newest complete checkpoint in --checkpoint-dir, up to N times (docs/reliability.md).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_restarts: u32,
    /// Seconds before the first restart (doubled after each, at most 30).
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_backoff)]
    pub restart_backoff: f64,
    /// Elastic restarts (0: restart on the same plan): `train` re-plans every restart onto the
    /// devices FILE (a topology) lists then; `launch` and `stage` go on without the hosts or
    /// ranks that do not rejoin within --rejoin-timeout, re-planned for those left. Stop if
    /// fewer than N ranks are left.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "max_restarts")]
    pub min_ranks: usize,
}

/// How agents (`launch`, `stage` with --max-restarts) meet before every attempt.
#[derive(Args, Debug, Clone)]
pub struct RoundArgs {
    /// With --min-ranks: seconds a restart waits for every host or rank to rejoin before it
    /// goes on without the missing ones.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        requires = "min_ranks"
    )]
    pub rejoin_timeout: u64,
}

fn parse_backoff(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=30.0).contains(&v) => Ok(v),
        _ => Err(format!("\"{s}\" is not a number of seconds from 0 to 30")),
    }
}

#[derive(Args, Debug)]
pub struct TrainCommand {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub restart: RestartArgs,
}

#[derive(Args, Debug)]
pub struct LaunchArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The host (a `[[hosts]]` name) whose stages to start here.
    #[arg(long)]
    pub host: String,
    /// Job identity, the same on every host (e.g. the cluster's job id). Default: derived
    /// from the job plan.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Find the other hosts' ranks at run time through the rendezvous rank 0 hosts at
    /// HOST:PORT (for topologies whose `[[hosts]]` have no address). With --max-restarts the
    /// launchers meet there before every attempt (any topology).
    #[arg(long, value_name = "HOST:PORT")]
    pub rendezvous: Option<String>,
    #[command(flatten)]
    pub restart: RestartArgs,
    #[command(flatten)]
    pub rounds: RoundArgs,
}

fn spec(args: &TrainArgs, host: Option<&str>, run_id: Option<&str>) -> Result<LaunchSpec> {
    let (job, input) = load_input(&args.topology.file, &args.topology.overrides, None)?;
    spec_for_job(args, job, input, host, run_id)
}

/// The launch of `job`'s ranks on `host` (every rank when None), checked: the host exists and
/// runs ranks, and this build can drive their devices.
pub(super) fn spec_for_job(
    args: &TrainArgs,
    job: crate::job::Job,
    input: Input,
    host: Option<&str>,
    run_id: Option<&str>,
) -> Result<LaunchSpec> {
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
    // A device this build cannot drive is bad input, reported before any process starts.
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
    // Each rank computes on one thread (flex runs its kernels on the calling thread); more
    // ranks than a host's cores would make them take turns.
    for (h, host_def) in topo.hosts.iter().enumerate() {
        let here = job.places.iter().filter(|p| p.host == h).count();
        let cores = host_def
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if here > cores && (host.is_none() || host == Some(host_def.name.as_str())) {
            crate::note!(
                "warning: host {} runs {here} stages on {cores} compute threads; stages will share cores (set [[hosts]] threads, or use fewer stages)",
                host_def.name
            );
        }
    }
    let run_id = match host {
        None => fresh_run_id(),
        Some(_) => parse_run_id(job.hash, run_id),
    };
    let last_chunk = job.chunks().len() - 1;
    Ok(LaunchSpec {
        file: args.topology.file.clone(),
        stages,
        total_stages: job.ranks(),
        last_stage: job.chunk_rank[last_chunk],
        steps: args.run.steps.unwrap_or(topo.train.steps) as u64,
        batch: topo.train.batch,
        run_id,
        local: host.is_none(),
        metrics: args.run.metrics.clone(),
        append_metrics: false,
        trace: args.trace.clone(),
        save_params: args.run.save_params.clone(),
        extra_args: args
            .checkpoint
            .to_args()
            .into_iter()
            .chain(
                args.secret_file
                    .iter()
                    .flat_map(|f| ["--secret-file".to_string(), f.clone()]),
            )
            .collect(),
        peer_timeout: args.peer_timeout,
        connect_timeout: args.connect_timeout,
        job,
    })
}

pub fn run_train(cmd: &TrainCommand) -> Result<()> {
    let args = &cmd.train;
    let mut spec = spec(args, None, None)?;
    crate::note!(
        "training {} on {} stages on this host, {} steps (run {:016x})",
        spec.file,
        spec.total_stages,
        spec.steps,
        spec.run_id
    );
    let policy = RestartPolicy {
        max_restarts: cmd.restart.max_restarts,
        backoff: std::time::Duration::from_secs_f64(cmd.restart.restart_backoff),
        checkpoint_dir: args.checkpoint.checkpoint_dir.clone(),
    };
    if policy.max_restarts > 0 && policy.checkpoint_dir.is_none() {
        crate::note!(
            "warning: --max-restarts without --checkpoint-dir: a restart starts again from step 0"
        );
    }
    let min_ranks = cmd.restart.min_ranks;
    let mut replan = || -> Result<Option<LaunchSpec>> {
        if min_ranks == 0 {
            return Ok(None);
        }
        let next = self::spec(args, None, None)?;
        if next.total_stages < min_ranks {
            anyhow::bail!(
                "{}: the topology now gives {} ranks, fewer than --min-ranks {min_ranks}",
                args.topology.file,
                next.total_stages
            );
        }
        Ok(Some(next))
    };
    let report = launch_with_restarts(&mut spec, &policy, &mut replan)?;
    let last = report.last;
    crate::note!(
        "done: every stage finished {} steps{}{}; peak RSS {}",
        spec.steps,
        last.map(|m| format!(
            ", final loss {:.4} ({:.0} samples/s)",
            m.loss, m.samples_per_sec
        ))
        .unwrap_or_default(),
        spec.metrics
            .as_ref()
            .map(|m| format!("; metrics in {m}"))
            .unwrap_or_default(),
        rss_summary(&report.peak_rss_kib)
    );
    crate::metrics::print_last_eval(report.last_eval.as_ref());
    Ok(())
}

pub fn run_launch(args: &LaunchArgs) -> Result<()> {
    if args.restart.max_restarts > 0 {
        let report = super::launch_agent::run(args)?;
        return finish_launch(args, &report);
    }
    let mut spec = spec(&args.train, Some(&args.host), args.run_id.as_deref())?;
    if let Some(rv) = &args.rendezvous {
        spec.extra_args
            .extend(["--rendezvous".to_string(), rv.clone()]);
    }
    let ks: Vec<String> = spec.stages.iter().map(|(k, _)| k.to_string()).collect();
    crate::note!(
        "host {}: starting stages {} of {} (run {:016x})",
        args.host,
        ks.join(", "),
        spec.total_stages,
        spec.run_id
    );
    let report = launch(&spec)?;
    finish_launch(args, &report)
}

fn finish_launch(args: &LaunchArgs, report: &crate::launcher::LaunchReport) -> Result<()> {
    crate::note!(
        "host {}: every stage finished; peak RSS {}",
        args.host,
        rss_summary(&report.peak_rss_kib)
    );
    crate::metrics::print_last_eval(report.last_eval.as_ref());
    Ok(())
}

/// "rank 0 70.1 MiB, rank 1 68.3 MiB".
fn rss_summary(peaks: &[(usize, u64)]) -> String {
    peaks
        .iter()
        .map(|(r, kib)| format!("rank {r} {:.1} MiB", *kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}
