//! `brigade train FILE` (every stage on this host) and `brigade launch FILE --host NAME`
//! (one host's stages of a multi-host run).

use super::args::{CheckpointArgs, RestartArgs, RoundArgs, RunArgs, TopologyArgs};
use super::tracked;
use crate::job::load_input;
use crate::launcher::for_job::{LaunchOptions, spec_for_job};
use crate::launcher::host_agent::{self, HostLaunch};
use crate::launcher::{LaunchReport, LaunchSpec, launch, launch_with_restarts};
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    #[command(flatten)]
    pub run: RunArgs,
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
    /// Track the run on this MLflow server (overrides `[tracking] mlflow`); credentials from
    /// MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD.
    #[arg(long, value_name = "URI")]
    pub mlflow: Option<String>,
    /// Write the run's HTML report here at the end (refreshed at each evaluation).
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub report: Option<String>,
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

impl TrainArgs {
    /// The options as the launchers take them.
    fn options(&self) -> LaunchOptions {
        LaunchOptions {
            file: self.topology.file.clone(),
            overrides: self.topology.overrides.clone(),
            checkpoint: self.checkpoint.options(),
            steps: self.run.steps,
            metrics: self.run.metrics.clone(),
            save_params: self.run.save_params.clone(),
            trace: self.trace.clone(),
            report: self.report.clone(),
            tracker: None,
            secret_file: self.secret_file.clone(),
            peer_timeout: self.peer_timeout,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// The launch of FILE's ranks on `host` (every rank when None).
fn spec(args: &TrainArgs, host: Option<&str>, run_id: Option<&str>) -> Result<LaunchSpec> {
    let (job, input) = load_input(&args.topology.file, &args.topology.overrides, None)?;
    spec_for_job(&args.options(), job, input, host, run_id)
}

pub fn run_train(cmd: &TrainCommand) -> Result<()> {
    let mut spec = spec(&cmd.train, None, None)?;
    let tracker = tracked::start(&mut spec, cmd.train.mlflow.as_deref())?;
    let result = train(cmd, &mut spec);
    tracked::finish(&spec, tracker, &result);
    result
}

fn train(cmd: &TrainCommand, spec: &mut LaunchSpec) -> Result<()> {
    let args = &cmd.train;
    crate::note!(
        "training {} on {} stages on this host, {} steps (run {:016x})",
        spec.file,
        spec.total_stages,
        spec.steps,
        spec.run_id
    );
    let policy = cmd.restart.policy(args.checkpoint.checkpoint_dir.clone());
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
    let report = launch_with_restarts(spec, &policy, &mut replan)?;
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
    if let Some(dir) = &args.run.save_params {
        // Every rank ran here: the whole model's parameters are in DIR.
        let topo = crate::job::load_topology(&args.topology.file, &args.topology.overrides)?;
        super::export::write_beside_params(&topo, std::path::Path::new(dir))?;
    }
    Ok(())
}

pub fn run_launch(args: &LaunchArgs) -> Result<()> {
    // The host's launch as it starts: tracking is set up from it (an agent re-plans restarts,
    // and its later launches log to the same run).
    let mut spec = spec(&args.train, Some(&args.host), args.run_id.as_deref())?;
    let tracker = tracked::start(&mut spec, args.train.mlflow.as_deref())?;
    let result = launch_host(args, &mut spec);
    tracked::finish(&spec, tracker, &result);
    result
}

fn launch_host(args: &LaunchArgs, spec: &mut LaunchSpec) -> Result<()> {
    if args.restart.max_restarts > 0 {
        let launch = HostLaunch {
            host: args.host.clone(),
            run_id: args.run_id.clone(),
            rendezvous: args.rendezvous.clone(),
        };
        let mut options = args.train.options();
        options.tracker = spec.tracker.clone();
        let report = host_agent::run(
            &options,
            &launch,
            &args
                .restart
                .policy(args.train.checkpoint.checkpoint_dir.clone()),
            args.restart.elastic(&args.rounds),
        )?;
        return finish_launch(args, &report);
    }
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
    let report = launch(spec)?;
    finish_launch(args, &report)
}

fn finish_launch(args: &LaunchArgs, report: &LaunchReport) -> Result<()> {
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
