//! Subcommands of `brigade`. Each reads a topology through [`args::TopologyArgs`], so every command
//! takes the same `--set section.key=value` overrides.

mod args;
mod evaluate;
mod export;
mod keys;
mod plan;
mod plan_text;
mod profile;
mod reference;
mod report;
mod simulate;
mod stage;
mod tracked;
mod train;

use brigade_partitioner::ConfigError;
use clap::{Parser, Subcommand};
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
    /// Write a model read from a Hugging Face checkpoint, as trained, back as one.
    Export(export::ExportArgs),
    /// Write a run's HTML report: curves, each rank's timeline, bubble, memory, the plan.
    Report(report::ReportArgs),
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
        Command::Plan(_) | Command::Simulate(_) | Command::Keys(_) | Command::Report(_)
    ) {
        // Commands that only print: `brigade plan … | head` ends quietly, as other Unix tools
        // do, instead of panicking on the closed pipe. (Commands that run ranks keep Rust's
        // default, ignoring SIGPIPE, so a closed terminal never kills a job.)
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(cli.command, Command::Evaluate(_) | Command::Profile(_)) {
        // One compute thread, as before threads per rank (profile measures more in pools of
        // its own); `stage` and `reference` start theirs.
        let _ = crate::runtime::threads::start(1, None);
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
        Command::Export(args) => export::run(&args),
        Command::Report(args) => report::run(&args),
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
