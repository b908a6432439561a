//! What one rank is told to do: `brigade stage`'s flags, as plain data (the command line parses
//! them; restart agents and tests build them too).

/// Checkpointing of a rank.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Directory for checkpoints (per layer, so any split can resume from them).
    pub dir: Option<String>,
    /// Save a checkpoint after every N steps (0: never).
    pub every: u64,
    /// Continue from the newest complete checkpoint in `dir` (if there is one).
    pub resume: bool,
}

/// One rank's options (see `brigade stage --help` for each).
#[derive(Debug, Clone)]
pub struct RankOptions {
    /// A job plan or a topology.
    pub file: String,
    /// `--set` overrides of a topology.
    pub overrides: Vec<String>,
    pub checkpoint: CheckpointOptions,
    /// The rank (`--stage`); None: from the engine's environment.
    pub stage: Option<usize>,
    pub steps: Option<usize>,
    pub run_id: Option<String>,
    /// Every rank runs on this machine: ipc:// for every link.
    pub local: bool,
    /// Seconds a connected peer may stay silent.
    pub peer_timeout: u64,
    /// Seconds to wait for the peers to start.
    pub connect_timeout: u64,
    pub trace_out: Option<String>,
    pub save_params: Option<String>,
    pub secret_file: Option<String>,
    /// Exit when the process with this pid (the launcher) goes away.
    pub launcher_pid: Option<u32>,
    pub rendezvous: Option<String>,
    /// Every rank's HOST:PORT, in rank order (no rendezvous).
    pub peers: Vec<String>,
    /// The rendezvous port when the engine names only rank 0's host.
    pub rendezvous_port: u16,
    /// The file the user gave the launcher (for messages).
    pub plan_source: Option<String>,
    /// Continue from the checkpoint of exactly this step.
    pub resume_step: Option<u64>,
    /// Compute threads (`--threads`); None: the plan's, else the engine's, else one.
    pub threads: Option<usize>,
}

impl CheckpointOptions {
    /// The flags again, for a rank started as a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = &self.dir {
            a.extend([
                "--checkpoint-dir".to_string(),
                d.clone(),
                "--checkpoint-every".into(),
                self.every.to_string(),
            ]);
            if self.resume {
                a.push("--resume".into());
            }
        }
        a
    }
}
