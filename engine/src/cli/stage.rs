//! `brigade stage FILE --stage K`: one rank's process. Launchers (`train`, `launch`, Slurm,
//! Kubernetes, Spark barrier tasks) start one per rank; it prints `StageEvent`s on stdout and
//! human messages on stderr. FILE is a job plan (what launchers hand their stages) or a
//! topology, planned here exactly as `brigade plan` would. The rank itself is
//! [`crate::runtime`]; with `--max-restarts`, [`crate::launcher::rank_agent`] supervises it.

use super::args::{CheckpointArgs, RestartArgs, RoundArgs, TopologyArgs};
use crate::launcher::rank_agent;
use crate::runtime::RankOptions;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Which rank of the plan to run (0-based; the plan says which chunk it holds). Default:
    /// from the engine's environment (`SLURM_PROCID`, `RANK`, `JOB_COMPLETION_INDEX`).
    #[arg(long, visible_alias = "rank")]
    pub stage: Option<usize>,
    /// Train until this many steps are done, counting resumed ones (default: train.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Job identity shared by all ranks: 16 hex digits, or any name (e.g. a Slurm job id)
    /// hashed with the job plan. Default: derived from the job plan alone.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Every rank runs on this machine: use ipc:// for every link, whatever the hosts say.
    #[arg(long)]
    pub local: bool,
    /// Seconds a connected peer may stay silent before it counts as lost.
    #[arg(long, default_value_t = 5)]
    pub peer_timeout: u64,
    /// Seconds to wait for the peers to start.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Write this rank's trace events (JSON array) here.
    #[arg(long)]
    pub trace_out: Option<String>,
    /// Write this rank's final parameters to DIR/stage-K.safetensors (K: the chunk).
    #[arg(long, value_name = "DIR")]
    pub save_params: Option<String>,
    /// File holding the job secret (default: $BRIGADE_SECRET_FILE, then $BRIGADE_SECRET).
    /// Without a secret, ranks accept loopback and ipc peers only.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<String>,
    /// Exit when the process with this pid (the launcher) goes away.
    #[arg(long, hide = true)]
    pub launcher_pid: Option<u32>,
    /// Find the other ranks at run time through the rendezvous rank 0 hosts at HOST:PORT,
    /// instead of `[[hosts]] address` (this rank listens on a free port of the interface that
    /// reaches HOST).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "peers")]
    pub rendezvous: Option<String>,
    /// Every rank's HOST:PORT, in rank order, from an engine that exchanged them itself (e.g.
    /// Spark's allGather): this rank listens on its own entry's port; no rendezvous.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The rendezvous port when the engine names only rank 0's host (Slurm's first node).
    #[arg(long, value_name = "PORT", default_value_t = 29400)]
    pub rendezvous_port: u16,
    /// The file the user gave the launcher (messages name it rather than the launcher's copy
    /// of the plan in the run directory).
    #[arg(long, hide = true)]
    pub plan_source: Option<String>,
    /// Continue from the checkpoint of exactly this step in --checkpoint-dir (it must be
    /// complete); restart agents pass it so that every rank resumes the same step.
    #[arg(long, value_name = "STEP", requires = "checkpoint_dir")]
    pub resume_step: Option<u64>,
    /// Compute on this many threads (default: the plan's "cpu:T" or `[partition] threads`,
    /// else the cores the engine gave the task — SLURM_CPUS_PER_TASK, spark.task.cpus through
    /// brigade_spark, torchrun's OMP_NUM_THREADS — else one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub threads: Option<u64>,
    #[command(flatten)]
    pub restart: RestartArgs,
    #[command(flatten)]
    pub rounds: RoundArgs,
    /// With --max-restarts: write one JSON line per step, as `train --metrics` (the agent
    /// running the last rank writes it).
    #[arg(long, requires = "max_restarts")]
    pub metrics: Option<String>,
    /// With --metrics: track the run on this MLflow server (overrides `[tracking] mlflow`;
    /// the agent running the last rank logs).
    #[arg(long, value_name = "URI", requires = "metrics")]
    pub mlflow: Option<String>,
}

impl StageArgs {
    /// The rank's options, as the runtime takes them.
    fn options(&self) -> RankOptions {
        RankOptions {
            file: self.topology.file.clone(),
            overrides: self.topology.overrides.clone(),
            checkpoint: self.checkpoint.options(),
            stage: self.stage,
            steps: self.steps,
            run_id: self.run_id.clone(),
            local: self.local,
            peer_timeout: self.peer_timeout,
            connect_timeout: self.connect_timeout,
            trace_out: self.trace_out.clone(),
            save_params: self.save_params.clone(),
            secret_file: self.secret_file.clone(),
            launcher_pid: self.launcher_pid,
            rendezvous: self.rendezvous.clone(),
            peers: self.peers.clone(),
            rendezvous_port: self.rendezvous_port,
            plan_source: self.plan_source.clone(),
            resume_step: self.resume_step,
            threads: self.threads.map(|t| t as usize),
        }
    }
}

/// Runs the rank, or its agent with `--max-restarts`.
pub fn run(args: &StageArgs) -> Result<()> {
    let opts = args.options();
    if args.restart.max_restarts == 0 {
        return crate::runtime::run(&opts);
    }
    let report = rank_agent::run(
        &opts,
        &args.restart.policy(args.checkpoint.checkpoint_dir.clone()),
        args.restart.elastic(&args.rounds),
        args.metrics.as_deref(),
        args.mlflow.as_deref(),
    )?;
    crate::metrics::print_last_eval(report.last_eval.as_ref());
    Ok(())
}
