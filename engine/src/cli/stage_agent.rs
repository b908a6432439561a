//! `brigade stage --max-restarts N`: a rank started by a cluster engine (Slurm, torchrun,
//! Kubernetes) that survives failures. The process becomes its rank's agent: it runs the rank
//! as a child process and, before every attempt, meets the other ranks' agents at the
//! rendezvous (rank 0's agent hosts it), so every restart is a new round that all of them join.
//! With `--min-ranks`, ranks whose agent does not rejoin within `--rejoin-timeout` (a host lost
//! with its processes) are left out: the survivors re-plan the topology for the ranks left and
//! resume the same checkpoint on the new split.

use super::stage::{StageArgs, check_rendezvous, rank_of};
use crate::identity::parse_run_id;
use crate::job::{Job, elastic_shape, load_input, replan};
use crate::launcher::agent::{self, Agent};
use crate::launcher::{LaunchSpec, RestartPolicy};
use crate::rounds::{Round, Rules};
use crate::transport::net::{JobKeys, load_secret};
use anyhow::{Result, bail};
use brigade_partitioner::ConfigError;
use std::time::Duration;

pub fn run(args: &StageArgs) -> Result<()> {
    let (mut first, _) = load_input(&args.topology.file, &args.topology.overrides, None)?;
    if let Some(source) = &args.plan_source {
        first.file = source.clone();
    }
    let (k, _, engine) = rank_of(args, &first)?;
    if !args.peers.is_empty() {
        return Err(ConfigError::invalid(
            &first.file,
            "--peers",
            "--max-restarts needs a rendezvous, where the ranks' agents agree on every restart; --peers fixes every address once",
            "Pass --rendezvous HOST:PORT instead (an engine that re-runs its tasks itself, as Spark does, needs no --max-restarts).",
        )
        .into());
    }
    let rendezvous = args
        .rendezvous
        .clone()
        .or_else(|| {
            let (host, port) = engine.as_ref()?.rendezvous.clone()?;
            Some(format!("{host}:{}", port.unwrap_or(args.rendezvous_port)))
        })
        .ok_or_else(|| {
            ConfigError::invalid(
                &first.file,
                "--rendezvous",
                "--max-restarts needs a rendezvous, where the ranks' agents agree on every restart",
                "Pass --rendezvous HOST:PORT (on rank 0's machine), or start the ranks from Slurm or torchrun.",
            )
        })?;
    let secret = load_secret(args.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    check_rendezvous(&rendezvous, &keys, &format!("rank {k}"))?;
    let min_ranks = args.restart.min_ranks;
    let agent = Agent {
        id: format!("rank {k}"),
        order: k as u64,
        rendezvous,
        serve: k == 0,
        keys,
        rules: Rules {
            ranks: first.ranks(),
            min_ranks,
            rejoin_within: Duration::from_secs(args.rounds.rejoin_timeout),
            within: Duration::from_secs(args.connect_timeout.max(1)),
            job_hash: first.hash_hex(),
            run_id: format!("{:016x}", parse_run_id(first.hash, args.run_id.as_deref())),
        },
        endpoints: 1,
        resume: args.checkpoint.resume,
        ranks: 1,
        layers: first.topo.model.layers.len(),
    };
    let policy = RestartPolicy {
        max_restarts: args.restart.max_restarts,
        backoff: Duration::from_secs_f64(args.restart.restart_backoff),
        checkpoint_dir: args.checkpoint.checkpoint_dir.clone(),
    };
    let mut planned: Option<(usize, Job)> = None;
    let mut plan_for = |round: &Round| -> Result<LaunchSpec> {
        let world = round.members.len();
        let job = match &planned {
            Some((w, job)) if *w == world => job.clone(),
            _ if world == first.ranks() => first.clone(),
            _ => {
                let (stages, replicas) =
                    elastic_shape(first.ranks_per_replica(), first.replicas(), world);
                let job = replan(
                    &first,
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
        if min_ranks > 0 && job.ranks() < min_ranks {
            bail!(
                "only {} ranks are left (members: {}), fewer than --min-ranks {min_ranks}",
                job.ranks(),
                ids(round)
            );
        }
        planned = Some((world, job.clone()));
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
        Ok(spec(args, job, me, peers))
    };
    let report = agent::run(&agent, &policy, &mut plan_for)?;
    crate::metrics::print_last_eval(report.last_eval.as_ref());
    Ok(())
}

fn ids(round: &Round) -> String {
    let ids: Vec<&str> = round.members.iter().map(|m| m.id.as_str()).collect();
    ids.join(", ")
}

/// The launch of this agent's rank `me` (none when the plan has fewer ranks than members).
fn spec(args: &StageArgs, job: Job, me: usize, peers: Vec<String>) -> LaunchSpec {
    let mut extra = args.checkpoint.to_args();
    extra.extend(
        args.secret_file
            .iter()
            .flat_map(|f| ["--secret-file".to_string(), f.clone()]),
    );
    extra.extend(["--peers".to_string(), peers.join(",")]);
    let last_chunk = job.chunks().len() - 1;
    let stages = if me < job.ranks() {
        vec![(me, job.host_name(me).to_string())]
    } else {
        Vec::new()
    };
    LaunchSpec {
        file: args
            .plan_source
            .clone()
            .unwrap_or_else(|| args.topology.file.clone()),
        stages,
        total_stages: job.ranks(),
        last_stage: job.chunk_rank[last_chunk],
        steps: args.steps.unwrap_or(job.topo.train.steps) as u64,
        batch: job.topo.train.batch,
        run_id: 0,
        local: false,
        metrics: args.metrics.clone(),
        append_metrics: false,
        trace: args.trace_out.clone(),
        save_params: args.save_params.clone(),
        extra_args: extra,
        peer_timeout: args.peer_timeout,
        connect_timeout: args.connect_timeout,
        job,
    }
}
