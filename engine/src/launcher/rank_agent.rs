//! `brigade stage --max-restarts N`: a rank started by a cluster engine (Slurm, torchrun,
//! Kubernetes) that survives failures. The process becomes its rank's agent: it runs the rank
//! as a child process and, before every attempt, meets the other ranks' agents at the
//! rendezvous (rank 0's agent hosts it), so every restart is a new round that all of them join.
//! With `--min-ranks`, ranks whose agent does not rejoin within `--rejoin-timeout` (a host lost
//! with its processes) are left out: the survivors re-plan the topology for the ranks left and
//! resume the same checkpoint on the new split.

use super::agent::{self, Agent, Elastic};
use super::restart::RestartPolicy;
use super::spec::{LaunchReport, LaunchSpec};
use crate::identity::parse_run_id;
use crate::job::{Job, elastic_shape, load_input, replan};
use crate::rounds::{Round, Rules};
use crate::runtime::{RankOptions, check_rendezvous, rank_of};
use crate::transport::net::{JobKeys, load_secret};
use anyhow::{Result, bail};
use brigade_partitioner::ConfigError;
use std::time::Duration;

/// Runs the rank `opts` names round after round (see [`agent::run`]); `metrics`: the metrics
/// file the agent running the last rank writes.
pub fn run(
    opts: &RankOptions,
    policy: &RestartPolicy,
    elastic: Elastic,
    metrics: Option<&str>,
    mlflow: Option<&str>,
) -> Result<LaunchReport> {
    let (mut first, _) = load_input(&opts.file, &opts.overrides, None)?;
    if let Some(source) = &opts.plan_source {
        first.file = source.clone();
    }
    let (k, _, engine) = rank_of(opts, &first)?;
    if !opts.peers.is_empty() {
        return Err(ConfigError::invalid(
            &first.file,
            "--peers",
            "--max-restarts needs a rendezvous, where the ranks' agents agree on every restart; --peers fixes every address once",
            "Pass --rendezvous HOST:PORT instead (an engine that re-runs its tasks itself, as Spark does, needs no --max-restarts).",
        )
        .into());
    }
    let rendezvous = opts
        .rendezvous
        .clone()
        .or_else(|| {
            let (host, port) = engine.as_ref()?.rendezvous.clone()?;
            Some(format!("{host}:{}", port.unwrap_or(opts.rendezvous_port)))
        })
        .ok_or_else(|| {
            ConfigError::invalid(
                &first.file,
                "--rendezvous",
                "--max-restarts needs a rendezvous, where the ranks' agents agree on every restart",
                "Pass --rendezvous HOST:PORT (on rank 0's machine), or start the ranks from Slurm or torchrun.",
            )
        })?;
    let secret = load_secret(opts.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    check_rendezvous(&rendezvous, &keys, &format!("rank {k}"))?;
    let agent = Agent {
        id: format!("rank {k}"),
        order: k as u64,
        rendezvous,
        serve: k == 0,
        keys,
        rules: Rules {
            ranks: first.ranks(),
            min_ranks: elastic.min_ranks,
            rejoin_within: elastic.rejoin_timeout,
            within: Duration::from_secs(opts.connect_timeout.max(1)),
            job_hash: first.hash_hex(),
            run_id: format!("{:016x}", parse_run_id(first.hash, opts.run_id.as_deref())),
        },
        endpoints: 1,
        resume: opts.checkpoint.resume,
        ranks: 1,
        layers: first.topo.model.layers.len(),
    };
    // The agent of the last rank writes the metrics, so it tracks the run (one MLflow run
    // across every restart).
    let last = first.chunk_rank[first.chunks().len() - 1];
    let tracker = match metrics {
        Some(_) if k == last => {
            let run_id = parse_run_id(first.hash, opts.run_id.as_deref());
            crate::tracking::start_job(&first, run_id, mlflow)?
        }
        _ => None,
    };
    let mut planner = RankPlanner {
        opts,
        k,
        min_ranks: elastic.min_ranks,
        metrics,
        tracker: tracker.as_ref().map(|t| t.handle()),
        planned: None,
        first,
    };
    let result = agent::run(&agent, policy, &mut |round| planner.plan(round));
    if let Some(t) = tracker {
        let files: Vec<String> = metrics.iter().map(|m| m.to_string()).collect();
        let failure = result.as_ref().err().map(|e| format!("{e:#}"));
        crate::tracking::end_job(t, &planner.first, &files, failure);
    }
    result
}

/// Plans each round for the ranks that joined it.
struct RankPlanner<'a> {
    opts: &'a RankOptions,
    /// This agent's rank in the first plan.
    k: usize,
    min_ranks: usize,
    metrics: Option<&'a str>,
    tracker: Option<crate::tracking::TrackerHandle>,
    /// The last plan made, for the world it was made for.
    planned: Option<(usize, Job)>,
    first: Job,
}

impl RankPlanner<'_> {
    fn plan(&mut self, round: &Round) -> Result<LaunchSpec> {
        let (k, first) = (self.k, &self.first);
        let world = round.members.len();
        let job = match &self.planned {
            Some((w, job)) if *w == world => job.clone(),
            _ if world == first.ranks() => first.clone(),
            _ => {
                let (stages, replicas) =
                    elastic_shape(first.ranks_per_replica(), first.replicas(), world);
                let job = replan(
                    first,
                    &[
                        format!("partition.stages={stages}"),
                        format!("partition.replicas={replicas}"),
                    ],
                    None,
                )?;
                crate::note!(
                    "rank {k}: re-planned for {world} ranks (was {}): {stages} stages × {replicas} replicas",
                    first.ranks()
                );
                job
            }
        };
        if self.min_ranks > 0 && job.ranks() < self.min_ranks {
            bail!(
                "only {} ranks are left (members: {}), fewer than --min-ranks {}",
                job.ranks(),
                ids(round),
                self.min_ranks
            );
        }
        self.planned = Some((world, job.clone()));
        let me = round
            .members
            .iter()
            .position(|m| m.order == k as u64)
            .expect("the rendezvous answers members only");
        let peers: Vec<String> = round
            .members
            .iter()
            .take(job.ranks())
            .map(|m| m.endpoints.first().cloned().unwrap_or_default())
            .collect();
        let mut spec = spec(self.opts, self.metrics, job, me, peers);
        spec.tracker = self.tracker.clone();
        Ok(spec)
    }
}

fn ids(round: &Round) -> String {
    let ids: Vec<&str> = round.members.iter().map(|m| m.id.as_str()).collect();
    ids.join(", ")
}

/// The launch of this agent's rank `me` (none when the plan has fewer ranks than members).
fn spec(
    opts: &RankOptions,
    metrics: Option<&str>,
    job: Job,
    me: usize,
    peers: Vec<String>,
) -> LaunchSpec {
    let mut extra = opts.checkpoint.to_args();
    extra.extend(
        opts.secret_file
            .iter()
            .flat_map(|f| ["--secret-file".to_string(), f.clone()]),
    );
    extra.extend(["--peers".to_string(), peers.join(",")]);
    if let Some(t) = opts.threads {
        extra.extend(["--threads".to_string(), t.to_string()]);
    }
    let last_chunk = job.chunks().len() - 1;
    let stages = if me < job.ranks() {
        vec![(me, job.host_name(me).to_string())]
    } else {
        Vec::new()
    };
    LaunchSpec {
        file: opts
            .plan_source
            .clone()
            .unwrap_or_else(|| opts.file.clone()),
        stages,
        total_stages: job.ranks(),
        last_stage: job.chunk_rank[last_chunk],
        steps: opts.steps.unwrap_or(job.topo.train.steps) as u64,
        batch: job.topo.train.batch,
        run_id: 0,
        local: false,
        metrics: metrics.map(str::to_string),
        append_metrics: false,
        trace: opts.trace_out.clone(),
        report: None,
        tracker: None,
        save_params: opts.save_params.clone(),
        extra_args: extra,
        peer_timeout: opts.peer_timeout,
        connect_timeout: opts.connect_timeout,
        job,
    }
}
