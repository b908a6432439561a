//! `brigade launch --host NAME --rendezvous HOST:PORT --max-restarts N`: one host's launcher
//! that survives failures. It is that host's agent: before every attempt it meets the other
//! hosts' launchers at the rendezvous (the launcher of rank 0's host hosts it), then starts the
//! ranks the plan puts on its host. With `--min-ranks`, hosts whose launcher does not rejoin
//! within `--rejoin-timeout` are left out: the others plan the topology again without them
//! (fewer replicas first, then fewer stages, to fit the devices left) and resume the same
//! checkpoint on the new split.

use super::stage::check_rendezvous;
use super::train::{LaunchArgs, spec_for_job};
use crate::job::{Job, elastic_shape, load_input, replan};
use crate::launcher::agent::{self, Agent};
use crate::launcher::{LaunchReport, LaunchSpec, RestartPolicy};
use crate::rounds::{Round, Rules};
use crate::transport::net::{JobKeys, load_secret};
use anyhow::{Result, bail};
use brigade_partitioner::ConfigError;
use std::time::Duration;

pub fn run(args: &LaunchArgs) -> Result<LaunchReport> {
    let train = &args.train;
    let (first, input) = load_input(&train.topology.file, &train.topology.overrides, None)?;
    let host = args.host.as_str();
    // Checks the host and its devices as a launch without restarts would.
    let first_spec = spec_for_job(
        train,
        first.clone(),
        input,
        Some(host),
        args.run_id.as_deref(),
    )?;
    let rendezvous = args.rendezvous.clone().ok_or_else(|| {
        ConfigError::invalid(
            &first.file,
            "--rendezvous",
            "launch --max-restarts needs a rendezvous, where the hosts' launchers agree on every restart",
            "Pass --rendezvous HOST:PORT with a free port on the host that runs rank 0, the same on every host.",
        )
    })?;
    let secret = load_secret(train.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    check_rendezvous(&rendezvous, &keys, &format!("host {host}"))?;
    let topo = &first.topo;
    let h = topo
        .hosts
        .iter()
        .position(|x| x.name == host)
        .expect("checked by spec_for_job");
    let addressless = topo.hosts[h].address.is_none();
    let min_ranks = args.restart.min_ranks;
    let first_rank = first_spec.stages.first().map_or(0, |(k, _)| *k);
    let agent = Agent {
        id: host.to_string(),
        order: first_rank as u64,
        rendezvous,
        serve: first_rank == 0,
        keys,
        rules: Rules {
            ranks: first.ranks(),
            min_ranks,
            rejoin_within: Duration::from_secs(args.rounds.rejoin_timeout),
            within: Duration::from_secs(train.connect_timeout.max(1)),
            job_hash: first.hash_hex(),
            run_id: format!("{:016x}", first_spec.run_id),
        },
        endpoints: if addressless {
            topo.hosts[h].devices.len()
        } else {
            0
        },
        resume: train.checkpoint.resume,
        ranks: first_spec.stages.len(),
        layers: topo.model.layers.len(),
    };
    let policy = RestartPolicy {
        max_restarts: args.restart.max_restarts,
        backoff: Duration::from_secs_f64(args.restart.restart_backoff),
        checkpoint_dir: train.checkpoint.checkpoint_dir.clone(),
    };
    let hosts_of = |job: &Job| -> Vec<String> {
        let mut hs: Vec<String> = (0..job.ranks())
            .map(|r| job.host_name(r).to_string())
            .collect();
        hs.sort();
        hs.dedup();
        hs
    };
    let original = hosts_of(&first);
    let mut plan_for = |round: &Round| -> Result<LaunchSpec> {
        let mut members: Vec<String> = round.members.iter().map(|m| m.id.clone()).collect();
        members.sort();
        let job = if members == original {
            first.clone()
        } else {
            let available: usize = topo
                .hosts
                .iter()
                .filter(|x| members.contains(&x.name))
                .map(|x| x.devices.len())
                .sum();
            let (stages, replicas) =
                elastic_shape(first.ranks_per_replica(), first.replicas(), available);
            let job = replan(
                &first,
                &[
                    format!("partition.stages={stages}"),
                    format!("partition.replicas={replicas}"),
                ],
                Some(&members),
            )?;
            crate::note!(
                "host {host}: re-planned without {} for {} ranks (was {}): {stages} stages × {replicas} replicas on {}",
                original
                    .iter()
                    .filter(|x| !members.contains(x))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                job.ranks(),
                first.ranks(),
                members.join(", ")
            );
            job
        };
        if min_ranks > 0 && job.ranks() < min_ranks {
            bail!(
                "only {} ranks are left on {}, fewer than --min-ranks {min_ranks}",
                job.ranks(),
                members.join(", ")
            );
        }
        let here = hosts_of(&job).iter().any(|x| x == host);
        let mut spec = spec_for_job(
            train,
            job.clone(),
            input,
            here.then_some(host),
            args.run_id.as_deref(),
        )?;
        if !here {
            spec.stages.clear();
        }
        if addressless {
            let table = peer_table(&job, round)?;
            spec.extra_args
                .extend(["--peers".to_string(), table.join(",")]);
        }
        Ok(spec)
    };
    agent::run(&agent, &policy, &mut plan_for)
}

/// Every rank's endpoint: rank r, the i-th rank of its host, listens on that host's i-th
/// offered endpoint.
fn peer_table(job: &Job, round: &Round) -> Result<Vec<String>> {
    let mut used: std::collections::HashMap<&str, usize> = Default::default();
    (0..job.ranks())
        .map(|r| {
            let host = job.host_name(r);
            let i = used.entry(host).or_default();
            let m = round.members.iter().find(|m| m.id == host);
            let e = m.and_then(|m| m.endpoints.get(*i)).cloned();
            *i += 1;
            e.ok_or_else(|| {
                anyhow::anyhow!(
                    "rank {r}: host {host} offered no endpoint for it at the rendezvous"
                )
            })
        })
        .collect()
}
