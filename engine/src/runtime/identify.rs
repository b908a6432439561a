//! Which rank this process is: `--stage`, or what the cluster engine that started it says
//! ([`crate::cluster_env`]), checked against the plan.

use super::options::RankOptions;
use crate::cluster_env::{self, EngineContext};
use crate::job::Job;
use anyhow::Result;
use brigade_partitioner::ConfigError;

/// This rank's number, where it came from (`--stage` or the engine's variable), and the engine
/// that started the process, if any; checked against the plan (world size, range).
pub fn rank_of(
    opts: &RankOptions,
    job: &Job,
) -> Result<(usize, &'static str, Option<EngineContext>)> {
    let ranks = job.ranks();
    // An explicit --stage (launchers always give one) means the engine's variables are not
    // ours: `brigade train` inside a Slurm allocation must not read SLURM_NTASKS.
    let from_env = opts.stage.is_none();
    let engine = cluster_env::from_env(&|v| {
        if from_env {
            std::env::var(v).ok()
        } else {
            None
        }
    })
    .map_err(|e| {
        ConfigError::invalid(
            "the environment",
            e.var,
            format!("{:?}: {}", e.value, e.why),
            "Fix or unset the variable, or pass --stage.",
        )
    })?;
    let (k, rank_key) = match (opts.stage, &engine) {
        (Some(k), _) => (k, "--stage"),
        (None, Some(e)) => (e.rank, e.rank_var),
        (None, None) => {
            return Err(ConfigError::invalid(
                &job.file,
                "--stage",
                format!(
                    "no rank: not given, and no {} in the environment",
                    cluster_env::either(|e| e.rank_var())
                ),
                format!(
                    "Pass --stage 0 to {}, or start the rank from {}.",
                    ranks - 1,
                    cluster_env::either(|e| e.starter())
                ),
            )
            .into());
        }
    };
    check_world(job, engine.as_ref(), k, rank_key)?;
    Ok((k, rank_key, engine))
}

/// The engine started as many ranks as the plan has, and `k` is one of them.
fn check_world(
    job: &Job,
    engine: Option<&EngineContext>,
    k: usize,
    rank_key: &str,
) -> Result<(), ConfigError> {
    let ranks = job.ranks();
    if let Some((world, var)) = engine.and_then(|e| e.world)
        && world != ranks
    {
        return Err(ConfigError::invalid(
            "the environment",
            var,
            format!(
                "{world} ranks were started, but the plan {} has {ranks}",
                job.file
            ),
            format!("Start {ranks} tasks (one per rank), or plan for {world} stages."),
        ));
    }
    if k >= ranks {
        return Err(ConfigError::invalid(
            &job.file,
            rank_key,
            format!("rank {k} does not exist, the plan has {ranks} ranks"),
            format!("Use ranks 0 to {}.", ranks - 1),
        ));
    }
    Ok(())
}

/// The rank the engine's environment names, if any (for the error event of a rank that failed
/// before it knew its rank).
pub fn env_rank() -> Option<usize> {
    cluster_env::from_env(&|v| std::env::var(v).ok())
        .ok()
        .flatten()
        .map(|e| e.rank)
}
