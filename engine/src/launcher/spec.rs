//! What a supervisor is asked to start, and what it reports when every rank has finished.

use crate::job::Job;
use crate::metrics::{EvalMetrics, StepMetrics};

/// What to start.
pub struct LaunchSpec {
    /// The file the user gave (for messages).
    pub file: String,
    /// The plan every rank runs.
    pub job: Job,
    /// Ranks to run here, with the host each belongs to.
    pub stages: Vec<(usize, String)>,
    pub total_stages: usize,
    /// The rank holding the last chunk (it reports the loss).
    pub last_stage: usize,
    pub steps: u64,
    pub batch: usize,
    /// `--run-id` passed to every stage.
    pub run_id: u64,
    pub local: bool,
    pub metrics: Option<String>,
    /// Append to the metrics file instead of starting it (after a restart).
    pub append_metrics: bool,
    pub trace: Option<String>,
    /// `--report FILE` (written by whoever writes the metrics).
    pub report: Option<String>,
    /// Where the metrics also go: an MLflow run (this launch runs the last rank).
    pub tracker: Option<crate::tracking::TrackerHandle>,
    pub save_params: Option<String>,
    pub peer_timeout: u64,
    pub connect_timeout: u64,
    /// More arguments for every stage (checkpointing).
    pub extra_args: Vec<String>,
}

/// What a finished launch reports.
#[derive(Debug, Clone, Default)]
pub struct LaunchReport {
    /// The last step's metrics (when this host runs the last stage).
    pub last: Option<StepMetrics>,
    /// The last evaluation's figures (when this host runs the last stage).
    pub last_eval: Option<EvalMetrics>,
    /// Peak resident memory of each stage process started here, KiB.
    pub peak_rss_kib: Vec<(usize, u64)>,
}
