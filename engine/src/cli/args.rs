//! Arguments several subcommands share: the topology file and its overrides, how long to
//! train, checkpoints, restarts.

use crate::launcher::RestartPolicy;
use crate::launcher::agent::Elastic;
use crate::runtime::CheckpointOptions;
use brigade_partitioner::{ConfigError, Topology};
use clap::Args;
use std::time::Duration;

/// The topology file and its overrides, shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct TopologyArgs {
    /// Topology TOML file, or a job plan written by `brigade plan --out`.
    pub file: String,
    /// Override a key, e.g. `--set train.schedule=1f1b` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl TopologyArgs {
    /// The topology of FILE (a job plan's, when FILE is one), not planned.
    pub fn load(&self) -> Result<Topology, ConfigError> {
        crate::job::load_topology(&self.file, &self.overrides)
    }
}

/// How long to train and what to write, shared by `train`, `launch` and `reference`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Train until this many steps are done, counting resumed ones (default: train.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Write one JSON line per step: {"step", "loss", "step_ms", "samples_per_sec"}.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Write the final parameters, per stage, to DIR/stage-K.safetensors (named by layer).
    #[arg(long, value_name = "DIR")]
    pub save_params: Option<String>,
}

/// Checkpoint options shared by `train`, `launch`, `stage` and `reference`.
#[derive(Args, Debug, Clone, Default)]
pub struct CheckpointArgs {
    /// Directory for checkpoints (per layer, so any split can resume from them).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<String>,
    /// Save a checkpoint after every N steps.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "checkpoint_dir"
    )]
    pub checkpoint_every: u64,
    /// Continue from the newest complete checkpoint in --checkpoint-dir (if there is one).
    #[arg(long, requires = "checkpoint_dir")]
    pub resume: bool,
}

impl CheckpointArgs {
    /// The options as the rank runtime and the launchers take them.
    pub fn options(&self) -> CheckpointOptions {
        CheckpointOptions {
            dir: self.checkpoint_dir.clone(),
            every: self.checkpoint_every,
            resume: self.resume,
        }
    }
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

impl RestartArgs {
    /// How to restart, ranks checkpointing to `checkpoint_dir`.
    pub fn policy(&self, checkpoint_dir: Option<String>) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            backoff: Duration::from_secs_f64(self.restart_backoff),
            checkpoint_dir,
        }
    }

    /// How agents' restarts may shrink the job.
    pub fn elastic(&self, rounds: &RoundArgs) -> Elastic {
        Elastic {
            min_ranks: self.min_ranks,
            rejoin_timeout: Duration::from_secs(rounds.rejoin_timeout),
        }
    }
}
