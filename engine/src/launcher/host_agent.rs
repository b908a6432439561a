//! `brigade launch --host NAME --rendezvous HOST:PORT --max-restarts N`: one host's launcher
//! that survives failures. It is that host's agent: before every attempt it meets the other
//! hosts' launchers at the rendezvous (the launcher of rank 0's host hosts it), then starts the
//! ranks the plan puts on its host. With `--min-ranks`, hosts whose launcher does not rejoin
//! within `--rejoin-timeout` are left out: the others plan the topology again without them
//! (fewer replicas first, then fewer stages, to fit the devices left) and resume the same
//! checkpoint on the new split.

use super::agent::{self, Agent, Elastic};
use super::for_job::{LaunchOptions, spec_for_job};
use super::restart::RestartPolicy;
use super::spec::{LaunchReport, LaunchSpec};
use crate::job::{Input, Job, elastic_shape, load_input, replan};
use crate::rounds::{Round, Rules};
use crate::runtime::check_rendezvous;
use crate::transport::net::{JobKeys, load_secret};
use anyhow::{Result, bail};
use brigade_partitioner::ConfigError;
use std::time::Duration;

/// Which host this launcher is, and how the hosts' launchers meet.
#[derive(Debug, Clone)]
pub struct HostLaunch {
    /// The `[[hosts]]` name whose ranks start here.
    pub host: String,
    /// Job identity, the same on every host.
    pub run_id: Option<String>,
    /// HOST:PORT where the launchers meet.
    pub rendezvous: Option<String>,
}

/// Runs this host's ranks round after round (see [`agent::run`]).
pub fn run(
    opts: &LaunchOptions,
    launch: &HostLaunch,
    policy: &RestartPolicy,
    elastic: Elastic,
) -> Result<LaunchReport> {
    let (first, input) = load_input(&opts.file, &opts.overrides, None)?;
    let host = launch.host.as_str();
    // Checks the host and its devices as a launch without restarts would.
    let first_spec = spec_for_job(
        opts,
        first.clone(),
        input,
        Some(host),
        launch.run_id.as_deref(),
    )?;
    let agent = host_agent(opts, launch, &first, &first_spec, elastic)?;
    let topo = &first.topo;
    let h = topo
        .hosts
        .iter()
        .position(|x| x.name == host)
        .expect("checked by spec_for_job");
    let mut planner = HostPlanner {
        opts,
        launch,
        input,
        min_ranks: elastic.min_ranks,
        addressless: topo.hosts[h].address.is_none(),
        original: hosts_of(&first),
        first,
    };
    agent::run(&agent, policy, &mut |round| planner.plan(round))
}

/// This host's agent: it sorts by its first rank, and offers an endpoint per device when the
/// topology gives its host no address.
fn host_agent(
    opts: &LaunchOptions,
    launch: &HostLaunch,
    first: &Job,
    first_spec: &LaunchSpec,
    elastic: Elastic,
) -> Result<Agent> {
    let host = launch.host.as_str();
    let rendezvous = launch.rendezvous.clone().ok_or_else(|| {
        ConfigError::invalid(
            &first.file,
            "--rendezvous",
            "launch --max-restarts needs a rendezvous, where the hosts' launchers agree on every restart",
            "Pass --rendezvous HOST:PORT with a free port on the host that runs rank 0, the same on every host.",
        )
    })?;
    let secret = load_secret(opts.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    check_rendezvous(&rendezvous, &keys, &format!("host {host}"))?;
    let topo = &first.topo;
    let h = topo
        .hosts
        .iter()
        .position(|x| x.name == host)
        .expect("checked by spec_for_job");
    let first_rank = first_spec.stages.first().map_or(0, |(k, _)| *k);
    Ok(Agent {
        id: host.to_string(),
        order: first_rank as u64,
        rendezvous,
        serve: first_rank == 0,
        keys,
        rules: Rules {
            ranks: first.ranks(),
            min_ranks: elastic.min_ranks,
            rejoin_within: elastic.rejoin_timeout,
            within: Duration::from_secs(opts.connect_timeout.max(1)),
            job_hash: first.hash_hex(),
            run_id: format!("{:016x}", first_spec.run_id),
        },
        endpoints: if topo.hosts[h].address.is_none() {
            topo.hosts[h].devices.len()
        } else {
            0
        },
        resume: opts.checkpoint.resume,
        ranks: first_spec.stages.len(),
        layers: topo.model.layers.len(),
    })
}

/// The hosts that run ranks of `job`, sorted.
fn hosts_of(job: &Job) -> Vec<String> {
    let mut hs: Vec<String> = (0..job.ranks())
        .map(|r| job.host_name(r).to_string())
        .collect();
    hs.sort();
    hs.dedup();
    hs
}

/// Plans each round for the hosts that joined it.
struct HostPlanner<'a> {
    opts: &'a LaunchOptions,
    launch: &'a HostLaunch,
    input: Input,
    min_ranks: usize,
    /// The topology gives this host no address: ranks listen where the round says.
    addressless: bool,
    /// The hosts of the first plan.
    original: Vec<String>,
    first: Job,
}

impl HostPlanner<'_> {
    fn plan(&mut self, round: &Round) -> Result<LaunchSpec> {
        let host = self.launch.host.as_str();
        let mut members: Vec<String> = round.members.iter().map(|m| m.id.clone()).collect();
        members.sort();
        let job = if members == self.original {
            self.first.clone()
        } else {
            self.without_missing(&members)?
        };
        if self.min_ranks > 0 && job.ranks() < self.min_ranks {
            bail!(
                "only {} ranks are left on {}, fewer than --min-ranks {}",
                job.ranks(),
                members.join(", "),
                self.min_ranks
            );
        }
        let here = hosts_of(&job).iter().any(|x| x == host);
        let mut spec = spec_for_job(
            self.opts,
            job.clone(),
            self.input,
            here.then_some(host),
            self.launch.run_id.as_deref(),
        )?;
        if !here {
            spec.stages.clear();
        }
        if self.addressless {
            let table = peer_table(&job, round)?;
            spec.extra_args
                .extend(["--peers".to_string(), table.join(",")]);
        }
        Ok(spec)
    }

    /// The job planned again on the devices of `members` only.
    fn without_missing(&self, members: &[String]) -> Result<Job> {
        let first = &self.first;
        let available: usize = first
            .topo
            .hosts
            .iter()
            .filter(|x| members.contains(&x.name))
            .map(|x| x.devices.len())
            .sum();
        let (stages, replicas) =
            elastic_shape(first.ranks_per_replica(), first.replicas(), available);
        let job = replan(
            first,
            &[
                format!("partition.stages={stages}"),
                format!("partition.replicas={replicas}"),
            ],
            Some(members),
        )?;
        crate::note!(
            "host {}: re-planned without {} for {} ranks (was {}): {stages} stages × {replicas} replicas on {}",
            self.launch.host,
            self.original
                .iter()
                .filter(|x| !members.contains(x))
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            job.ranks(),
            first.ranks(),
            members.join(", ")
        );
        Ok(job)
    }
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
