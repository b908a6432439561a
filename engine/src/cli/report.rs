//! `brigade report --metrics M [--trace T] [--plan P] --out report.html`: a run's page.

use crate::report::{self, Inputs};
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The metrics file `train --metrics` or `reference --metrics` wrote.
    #[arg(long)]
    pub metrics: String,
    /// The trace `train --trace` wrote (for each rank's measured timeline).
    #[arg(long)]
    pub trace: Option<String>,
    /// The job: a topology (with --set overrides applied as for `plan`) or a plan file from
    /// `brigade plan --out` (for the predicted timeline and the stage table).
    #[arg(long)]
    pub plan: Option<String>,
    /// Override a key of the --plan topology, e.g. `--set train.schedule=1f1b` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", requires = "plan")]
    pub overrides: Vec<String>,
    /// Where to write the page.
    #[arg(long)]
    pub out: String,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let metrics = report::metrics(&args.metrics)?;
    let trace = args.trace.as_deref().map(report::trace).transpose()?;
    let plan = match &args.plan {
        Some(p) => Some(crate::job::load_planned(p, &args.overrides, None)?.2),
        None => None,
    };
    let inputs = Inputs {
        metrics_file: &args.metrics,
        metrics,
        trace,
        plan: plan.as_ref(),
        live: false,
    };
    report::write(&args.out, &report::render(&inputs))?;
    println!("report: {}", args.out);
    Ok(())
}
