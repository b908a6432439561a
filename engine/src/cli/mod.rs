//! Subcommands of `brigade`. Each reads a topology through [`TopologyArgs`], so every command
//! takes the same `--set section.key=value` overrides.

mod evaluate;
mod keys;
mod launch_agent;
mod plan;
mod profile;
mod reference;
mod simulate;
mod stage;
mod stage_agent;
mod train;

use brigade_partitioner::{ConfigError, Topology};
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

/// brigade: pipeline-parallel training.
#[derive(Parser, Debug)]
#[command(
    name = "brigade",
    version,
    about = "brigade: pipeline-parallel training over ZeroMQ links (plan, simulate, train, launch)",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Cut the model into stages and explain the plan.
    Plan(plan::PlanArgs),
    /// Train the whole model in one process: the ground truth for pipelined runs.
    Reference(reference::ReferenceArgs),
    /// A checkpoint's validation loss and accuracy (on the topology's validation data or --data).
    Evaluate(evaluate::EvaluateArgs),
    /// Measure each layer's forward and backward time for the planner.
    Profile(profile::ProfileArgs),
    /// Simulate the schedule on the plan's costs and draw it per stage.
    Simulate(simulate::SimulateArgs),
    /// Train with every stage as a process on this host (the embedded launcher).
    Train(train::TrainCommand),
    /// Start the stages the plan puts on one host of a multi-host topology.
    Launch(train::LaunchArgs),
    /// Run one stage (for external launchers: Slurm, Kubernetes, Spark).
    Stage(stage::StageArgs),
    /// Print the job's CURVE keys (derived from the job secret) in Z85, for ZeroMQ tools.
    Keys(keys::KeysArgs),
}

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
    /// The arguments again, for a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = &self.checkpoint_dir {
            a.extend([
                "--checkpoint-dir".to_string(),
                d.clone(),
                "--checkpoint-every".into(),
                self.checkpoint_every.to_string(),
            ]);
            if self.resume {
                a.push("--resume".into());
            }
        }
        a
    }
}

/// Exit code for bad input (a topology, profile or argument the user must fix).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    brigade_stages::alloc::tune();
    let cli = Cli::parse();
    #[cfg(unix)]
    if matches!(
        cli.command,
        Command::Plan(_) | Command::Simulate(_) | Command::Keys(_)
    ) {
        // Commands that only print: `brigade plan … | head` ends quietly, as other Unix tools
        // do, instead of panicking on the closed pipe. (Commands that run ranks keep Rust's
        // default, ignoring SIGPIPE, so a closed terminal never kills a job.)
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Reference(args) => reference::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Train(args) => train::run_train(&args),
        Command::Launch(args) => train::run_launch(&args),
        Command::Stage(args) => stage::run(&args),
        Command::Keys(args) => keys::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::note!("error: {e:#}");
            if e.chain()
                .any(|c| c.is::<ConfigError>() || c.is::<crate::launcher::BadInput>())
            {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
