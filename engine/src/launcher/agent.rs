//! Restarts across hosts: `launch --max-restarts` (one agent per host) and `stage
//! --max-restarts` (one agent per rank, started by Slurm, torchrun or Kubernetes). An agent
//! supervises its ranks as child processes (the embedded launcher, [`launch`]); before every
//! attempt it joins a restart round at the job's rendezvous ([`crate::rounds`]), which tells
//! every agent the same members, run id and resume step. The agents then plan for the members
//! (the first plan when nobody is missing; otherwise the topology again, on what is left —
//! elastic) and start their ranks. An agent outlives its ranks, so a killed or frozen rank is
//! a restart; a lost host (its agent gone) is a smaller world, with `--min-ranks`.

use super::failure::BadInput;
use super::restart::{RestartPolicy, backoff, causes_error, continue_metrics};
use super::spec::{LaunchReport, LaunchSpec};
use super::supervisor::launch;
use crate::rounds::{self, Join, Round, Rules};
use crate::runtime::free_endpoint;
use crate::transport::net::JobKeys;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// Who this agent is and where the job's agents meet.
pub struct Agent {
    /// "rank K" or the host name.
    pub id: String,
    /// Where it sorts among the members (its first rank in the first plan).
    pub order: u64,
    /// HOST:PORT of the rendezvous.
    pub rendezvous: String,
    /// Host the rendezvous (the agent running rank 0 of the first plan).
    pub serve: bool,
    pub keys: Option<JobKeys>,
    pub rules: Rules,
    /// Endpoints to offer each round (the most ranks it may run), when the topology gives no
    /// address for them; 0: the ranks use the topology's addresses.
    pub endpoints: usize,
    /// The user asked to resume (`--resume`): round 0 resumes too.
    pub resume: bool,
    /// Ranks it runs in the first plan.
    pub ranks: usize,
    /// Layers of the model (to find complete checkpoints).
    pub layers: usize,
}

/// How a restart may shrink the job.
#[derive(Debug, Clone, Copy)]
pub struct Elastic {
    /// Stop if fewer ranks are left (0: restart on the same plan).
    pub min_ranks: usize,
    /// How long a restart waits for every member to rejoin.
    pub rejoin_timeout: Duration,
}

/// What the agent needs from its command: the launch for a completed round — this agent's ranks
/// of the plan for the round's members, their peers' endpoints filled in.
pub type PlanFor<'a> = dyn FnMut(&Round) -> Result<LaunchSpec> + 'a;

/// Runs round after round until the job finishes, fails with bad input, or has failed
/// `max_restarts + 1` times.
pub fn run(agent: &Agent, policy: &RestartPolicy, plan_for: &mut PlanFor) -> Result<LaunchReport> {
    if agent.serve {
        host_rendezvous(agent)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the rendezvous runtime")?;
    let mut causes: Vec<String> = Vec::new();
    let mut ranks = agent.ranks;
    for round in 0..=policy.max_restarts {
        let me = joining(agent, policy, round, ranks)?;
        let done = rt
            .block_on(rounds::join(
                &agent.rendezvous,
                &me,
                agent.keys.clone(),
                agent.rules.within + agent.rules.rejoin_within,
            ))
            .map_err(|e| causes_error(&causes, policy, anyhow::anyhow!("{}: {e}", agent.id)))?;
        let mut spec = plan_for(&done)?;
        if spec.stages.is_empty() {
            crate::note!(
                "{}: the plan for round {round} runs no rank here; leaving the job",
                agent.id
            );
            return Ok(LaunchReport::default());
        }
        ranks = spec.stages.len();
        for_round(agent, &mut spec, &done, round, causes.last())?;
        let err = match launch(&spec) {
            Ok(report) => return Ok(report),
            Err(e) if e.is::<BadInput>() => return Err(e),
            Err(e) => e,
        };
        causes.push(format!("{err:#}"));
        if round == policy.max_restarts {
            break;
        }
        let wait = backoff(policy, round);
        crate::note!(
            "{}: restart {}/{} in {:.1} s after: {}",
            agent.id,
            round + 1,
            policy.max_restarts,
            wait.as_secs_f64(),
            causes.last().expect("pushed above")
        );
        std::thread::sleep(wait);
    }
    Err(causes_error(
        &causes,
        policy,
        anyhow::anyhow!("no restarts left"),
    ))
}

/// This agent's request to join round `round`: the newest complete checkpoint it sees, the
/// endpoints it offers.
fn joining(agent: &Agent, policy: &RestartPolicy, round: u32, ranks: usize) -> Result<Join> {
    let checkpoint = (round > 0 || agent.resume)
        .then(|| {
            let root = policy.checkpoint_dir.as_deref()?;
            brigade_stages::checkpoint::latest(Path::new(root), agent.layers).map(|(s, _)| s)
        })
        .flatten();
    let me = Join {
        round,
        id: agent.id.clone(),
        order: agent.order,
        ranks,
        endpoints: (0..agent.endpoints)
            .map(|_| free_endpoint(&agent.rendezvous))
            .collect::<Result<_>>()?,
        checkpoint,
        job_hash: agent.rules.job_hash.clone(),
        run_id: agent.rules.run_id.clone(),
    };
    Ok(me)
}

/// Sets the round's run id and resume step on `spec`, says what runs, and continues the
/// metrics file after a restart (`cause`: the last attempt's failure).
fn for_round(
    agent: &Agent,
    spec: &mut LaunchSpec,
    done: &Round,
    round: u32,
    cause: Option<&String>,
) -> Result<()> {
    spec.run_id = u64::from_str_radix(&done.run_id, 16).unwrap_or(spec.run_id);
    spec.extra_args.retain(|a| a != "--resume");
    if let Some(step) = done.resume {
        spec.extra_args
            .extend(["--resume-step".to_string(), step.to_string()]);
    }
    let here: Vec<String> = spec.stages.iter().map(|(k, _)| k.to_string()).collect();
    crate::note!(
        "{}: round {round}: {} members ({}), {} ranks; running rank {} (run {}){}",
        agent.id,
        done.members.len(),
        done.members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        spec.total_stages,
        here.join(", "),
        done.run_id,
        done.resume
            .map(|s| format!(", from the checkpoint of step {s}"))
            .unwrap_or_default()
    );
    let holds_last = spec.stages.iter().any(|(k, _)| *k == spec.last_stage);
    if round > 0
        && holds_last
        && let Some(m) = &spec.metrics
    {
        let cause = cause.map_or("", String::as_str);
        continue_metrics(m, done.resume.unwrap_or(0), round, cause)?;
        spec.append_metrics = true;
    }
    Ok(())
}

/// Starts the job's rendezvous on a thread of this process (it lives as long as the agent).
fn host_rendezvous(agent: &Agent) -> Result<()> {
    let addr = agent.rendezvous.clone();
    let listener = std::net::TcpListener::bind(&addr).with_context(|| {
        format!("{}: cannot host the restart rendezvous at {addr} (is it an address of this machine, and the port free?)", agent.id)
    })?;
    listener.set_nonblocking(true)?;
    let (rules, keys) = (agent.rules.clone(), agent.keys.clone());
    std::thread::Builder::new()
        .name("rendezvous".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => rounds::serve(l, rules, keys).await,
                    Err(e) => crate::note!("cannot serve the restart rendezvous at {addr}: {e}"),
                }
            })
        })
        .context("cannot start the rendezvous thread")?;
    Ok(())
}
