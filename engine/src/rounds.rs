//! Restart rounds: how launchers on several hosts (`launch --max-restarts`) and ranks started by
//! an engine (`stage --max-restarts`) agree on every (re)start. Each such *agent* supervises its
//! own rank processes; before each attempt every agent joins round r at the rendezvous, which
//! the agent of rank 0 hosts for the whole job. A round completes when every member of the
//! last round has joined — or, elastic (`--min-ranks`), when the others have waited
//! `--rejoin-timeout` and enough ranks are there: the job goes on without the rest. The answer
//! is the same for every member: who is in, the round's run id, the checkpoint step to resume
//! from (the oldest newest-complete step any member sees: all of them can load it), and every
//! member's endpoints. Agents then plan for the members they were told of — a pure function,
//! so every agent computes the same plan — and start their ranks.
//!
//! The decision is [`Collecting::decide`], a pure function of what has joined and the clock
//! (table-tested); [`serve`] and [`join`] only move bytes (ZMTP, CURVE under a job secret, as
//! the ranks' own rendezvous in [`crate::rendezvous`]).

use crate::rendezvous::{RendezvousError, Waiting, accept_loop, exchange, reply};
use crate::transport::net::JobKeys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What an agent says when it joins a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub round: u32,
    /// Who joins: "rank 3" for a rank's agent, the host name for a launcher.
    pub id: String,
    /// Members are listed by this (the agent's first rank in the first plan).
    pub order: u64,
    /// Ranks it runs now (for `--min-ranks`).
    pub ranks: usize,
    /// Where its ranks may listen, when the topology gives no addresses.
    pub endpoints: Vec<String>,
    /// The newest complete checkpoint step it sees (None: none, or not resuming).
    pub checkpoint: Option<u64>,
    /// The job as first planned, and its run id: every agent must have the same.
    pub job_hash: String,
    pub run_id: String,
}

/// One member of a completed round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub order: u64,
    pub ranks: usize,
    pub endpoints: Vec<String>,
}

/// A completed round, the same for every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub round: u32,
    /// Sorted by `order`.
    pub members: Vec<Member>,
    /// 16 hex digits: the first round's is the job's run id, later ones are derived from it.
    pub run_id: String,
    /// Resume from this step's checkpoint (None: start from step 0).
    pub resume: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Round(Round),
    Error(String),
}

/// The rules of the rendezvous.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Ranks of the first plan: round 0 waits for all of them.
    pub ranks: usize,
    /// Elastic when > 0: a later round may go on with at least this many ranks.
    pub min_ranks: usize,
    /// How long a later round waits for every last member before going on without some.
    pub rejoin_within: Duration,
    /// How long any round waits at most (then it fails, naming who is missing).
    pub within: Duration,
    pub job_hash: String,
    pub run_id: String,
}

/// What the rendezvous does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Wait,
    Complete(Round),
    Fail(String),
}

/// One round being collected.
#[derive(Debug, Clone)]
pub struct Collecting {
    pub round: u32,
    /// Ids of the last round's members (None in round 0: `Rules::ranks` ranks are expected).
    pub expected: Option<Vec<String>>,
    pub joined: BTreeMap<String, Join>,
    /// When the round began: its first join (round 0: when the rendezvous started).
    pub since: Option<Instant>,
}

impl Collecting {
    pub fn first() -> Self {
        Collecting {
            round: 0,
            expected: None,
            joined: BTreeMap::new(),
            since: None,
        }
    }

    /// Why `j` may not join this round, if it may not.
    pub fn refusal(&self, j: &Join, rules: &Rules) -> Option<String> {
        if j.job_hash != rules.job_hash || j.run_id != rules.run_id {
            return Some(format!(
                "{} was given another plan or run (job hash {}, run {}); the rendezvous has job hash {}, run {}. Give every agent the same plan file and --run-id",
                j.id, j.job_hash, j.run_id, rules.job_hash, rules.run_id
            ));
        }
        if j.round < self.round {
            return Some(format!(
                "{} was left out of restart round {}: it came after the others had waited {:.1} s; the job goes on without it",
                j.id,
                j.round,
                rules.rejoin_within.as_secs_f64()
            ));
        }
        if j.round > self.round {
            return Some(format!(
                "{} asks for round {}, but the rendezvous is at round {} (was it started again on its own?)",
                j.id, j.round, self.round
            ));
        }
        if self.joined.contains_key(&j.id) {
            return Some(format!("{} joined round {} twice", j.id, j.round));
        }
        if let Some(expected) = &self.expected
            && !expected.contains(&j.id)
        {
            return Some(format!(
                "{} was not in the last round ({}); a rank that left cannot rejoin a running job",
                j.id,
                expected.join(", ")
            ));
        }
        None
    }

    fn present(&self) -> usize {
        self.joined.values().map(|j| j.ranks).sum()
    }

    /// Whether the round is complete, failed, or must wait, at `now`.
    pub fn decide(&self, now: Instant, rules: &Rules) -> Decision {
        let Some(since) = self.since else {
            return Decision::Wait;
        };
        let everyone = match &self.expected {
            None => self.present() >= rules.ranks,
            Some(e) => e.iter().all(|id| self.joined.contains_key(id)),
        };
        let elastic = rules.min_ranks > 0 && self.expected.is_some();
        let waited = now.saturating_duration_since(since);
        if everyone
            || (elastic && waited >= rules.rejoin_within && self.present() >= rules.min_ranks)
        {
            return Decision::Complete(self.complete(rules));
        }
        if waited < rules.within {
            return Decision::Wait;
        }
        let joined: Vec<&str> = self.joined.keys().map(String::as_str).collect();
        let missing = match &self.expected {
            None => format!("{} of {} ranks joined", self.present(), rules.ranks),
            Some(e) => {
                let gone: Vec<&str> = e
                    .iter()
                    .filter(|id| !self.joined.contains_key(*id))
                    .map(String::as_str)
                    .collect();
                format!("missing {}", gone.join(", "))
            }
        };
        let need = if elastic {
            format!(
                " ({} ranks present, --min-ranks {})",
                self.present(),
                rules.min_ranks
            )
        } else {
            String::new()
        };
        Decision::Fail(format!(
            "round {} did not complete within {} s: {missing}{need}; joined: {}",
            self.round,
            rules.within.as_secs(),
            if joined.is_empty() {
                "none".to_string()
            } else {
                joined.join(", ")
            }
        ))
    }

    fn complete(&self, rules: &Rules) -> Round {
        let mut members: Vec<Member> = self
            .joined
            .values()
            .map(|j| Member {
                id: j.id.clone(),
                order: j.order,
                ranks: j.ranks,
                endpoints: j.endpoints.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.order);
        // Every member can load the oldest of the steps they see (checkpoints are kept).
        let resume = self.joined.values().map(|j| j.checkpoint).min().flatten();
        Round {
            round: self.round,
            members,
            run_id: round_run_id(&rules.run_id, self.round),
            resume,
        }
    }

    /// The next round, expecting this round's members.
    pub fn next(&self, done: &Round) -> Collecting {
        Collecting {
            round: self.round + 1,
            expected: Some(done.members.iter().map(|m| m.id.clone()).collect()),
            joined: BTreeMap::new(),
            since: None,
        }
    }
}

/// Round r's run id: the job's for round 0, derived from it after (so that nothing of a stopped
/// attempt can reach the next one).
pub fn round_run_id(run_id: &str, round: u32) -> String {
    if round == 0 {
        return run_id.to_string();
    }
    let base = u64::from_str_radix(run_id, 16).unwrap_or(0);
    format!(
        "{:016x}",
        crate::identity::derived_run_id(base, Some(&format!("restart-{round}")))
    )
}

/// The rendezvous of the whole job, hosted by rank 0's agent until its process ends: collects
/// round after round on `listener` and answers each member.
pub async fn serve(listener: TcpListener, rules: Rules, keys: Option<JobKeys>) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let (_stop, mut rx) = accept_loop::<Join>(listener, keys, &addr);
    let mut round = Collecting::first();
    round.since = Some(Instant::now());
    let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
    loop {
        match round.decide(Instant::now(), &rules) {
            Decision::Wait => {}
            Decision::Complete(done) => {
                for w in waiting.values_mut() {
                    reply(w, &Answer::Round(done.clone())).await;
                }
                waiting.clear();
                round = round.next(&done);
                continue;
            }
            Decision::Fail(why) => {
                crate::note!("restart rendezvous at {addr}: {why}");
                for w in waiting.values_mut() {
                    reply(w, &Answer::Error(why.clone())).await;
                }
                waiting.clear();
                // The job cannot go on; later joins hear the same.
                round.joined.clear();
                round.since = Some(Instant::now());
                continue;
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        let Ok(Some((from, accepted))) = next else {
            continue;
        };
        let (join, mut w) = match accepted {
            Ok(a) => a,
            Err(why) => {
                crate::note!(
                    "restart rendezvous at {addr}: refused a connection from {from}: {why}"
                );
                continue;
            }
        };
        if let Some(why) = round.refusal(&join, &rules) {
            crate::note!("restart rendezvous at {addr}: refused {from}: {why}");
            reply(&mut w, &Answer::Error(why)).await;
            continue;
        }
        round.since.get_or_insert_with(Instant::now);
        waiting.insert(join.id.clone(), w);
        round.joined.insert(join.id.clone(), join);
    }
}

/// An agent's side: joins round `me.round` at `addr` and waits for the round to complete.
pub async fn join(
    addr: &str,
    me: &Join,
    keys: Option<JobKeys>,
    within: Duration,
) -> Result<Round, RendezvousError> {
    let answer: Answer = exchange(addr, me, keys, within, within + Duration::from_secs(5)).await?;
    match answer {
        Answer::Round(r) => Ok(r),
        Answer::Error(why) => Err(RendezvousError::Io {
            addr: addr.to_string(),
            why,
        }),
    }
}

#[cfg(test)]
#[path = "rounds_tests.rs"]
mod tests;
