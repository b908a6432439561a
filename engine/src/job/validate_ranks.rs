//! A plan's ranks checked against its topology: numbered in order, each on a device of the
//! topology of the kind the plan says, holding the chunks its schedule runs on it, every chunk
//! held once per replica.

use super::JobPlan;
use super::validate::REPLAN;
use brigade_partitioner::{ConfigError, Placement, ScheduleKind, Topology};

impl JobPlan {
    /// Ranks: each on a device of the topology; each chunk held once per replica. Returns where
    /// each rank runs and, per replica, which rank holds each chunk.
    pub(super) fn check_ranks(
        &self,
        file: &str,
        topo: &Topology,
        schedule: ScheduleKind,
    ) -> Result<(Vec<Placement>, Vec<Vec<usize>>), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        if self.ranks.is_empty() {
            return Err(bad("ranks", "no ranks".into(), REPLAN));
        }
        let replicas = topo.partition.replicas;
        if !self.ranks.len().is_multiple_of(replicas) {
            return Err(bad(
                "ranks",
                format!(
                    "{} ranks do not make {replicas} equal replicas (partition.replicas)",
                    self.ranks.len()
                ),
                REPLAN,
            ));
        }
        // Ranks per replica.
        let k = self.ranks.len() / replicas;
        let mut chunk_ranks = vec![vec![usize::MAX; self.chunks.len()]; replicas];
        let mut places = Vec::with_capacity(self.ranks.len());
        for (r, rank) in self.ranks.iter().enumerate() {
            self.check_numbering(file, r, k)?;
            let place = self.place(file, topo, r)?;
            self.check_rank_chunks(file, schedule, r, k)?;
            claim(file, r, &rank.chunks, &mut chunk_ranks[rank.replica])?;
            places.push(place);
        }
        for (d, chunk_rank) in chunk_ranks.iter().enumerate() {
            if let Some(c) = chunk_rank.iter().position(|&r| r == usize::MAX) {
                return Err(bad(
                    "ranks",
                    format!("no rank of replica {d} holds chunk {c}"),
                    "Give every chunk to exactly one rank of each replica.",
                ));
            }
        }

        Ok((places, chunk_ranks))
    }

    /// Rank `r` is numbered in order, in replica r / k.
    fn check_numbering(&self, file: &str, r: usize, k: usize) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        let rank = &self.ranks[r];
        let key = |f: &str| format!("ranks[{r}].{f}");
        if rank.rank != r {
            return Err(bad(
                &key("rank"),
                format!("{}, expected {r} (ranks are numbered in order)", rank.rank),
                REPLAN,
            ));
        }
        if rank.replica != r / k {
            return Err(bad(
                &key("replica"),
                format!(
                    "{}, expected {} (replica d holds ranks d·{k} .. d·{k} + {})",
                    rank.replica,
                    r / k,
                    k - 1
                ),
                REPLAN,
            ));
        }
        Ok(())
    }

    /// Where rank `r` runs: a device of the topology, of the kind the plan says.
    fn place(&self, file: &str, topo: &Topology, r: usize) -> Result<Placement, ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        let rank = &self.ranks[r];
        let key = |f: &str| format!("ranks[{r}].{f}");
        let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        let h = topo
            .hosts
            .iter()
            .position(|h| h.name == rank.host)
            .ok_or_else(|| {
                bad(
                    &key("host"),
                    format!("no host named \"{}\" in the topology", rank.host),
                    &format!(
                        "Use one of: {}.{}",
                        names.join(", "),
                        brigade_partitioner::error::did_you_mean(&rank.host, &names)
                    ),
                )
            })?;
        let devices = &topo.hosts[h].devices;
        let Some(dev) = devices.get(rank.device) else {
            return Err(bad(
                &key("device"),
                format!(
                    "host \"{}\" has {} devices, there is no device {}",
                    rank.host,
                    devices.len(),
                    rank.device
                ),
                "Use a device index of that host's `devices` list.",
            ));
        };
        if dev.kind.to_string() != rank.device_kind {
            return Err(bad(
                &key("device_kind"),
                format!(
                    "\"{}\", but device {} of host \"{}\" is \"{}\"",
                    rank.device_kind, rank.device, rank.host, dev.kind
                ),
                "Make device_kind match the topology's device, or pick another device index.",
            ));
        }
        Ok(Placement {
            host: h,
            device: rank.device,
        })
    }

    /// Rank `r` holds the chunks its schedule runs on it.
    fn check_rank_chunks(
        &self,
        file: &str,
        schedule: ScheduleKind,
        r: usize,
        k: usize,
    ) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        let rank = &self.ranks[r];
        let replicas = self.ranks.len() / k;
        let key = |f: &str| format!("ranks[{r}].{f}");
        if schedule.needs().round_robin_chunks {
            // The interleaved order assumes chunk c on rank c mod K, v chunks each.
            let expected: Vec<usize> = (r % k..self.chunks.len()).step_by(k).collect();
            if !self.chunks.len().is_multiple_of(k) || rank.chunks != expected {
                return Err(bad(
                    &key("chunks"),
                    format!(
                        "{:?}, but interleaved 1F1B puts chunk c on rank c mod {k} ({} chunks on {k} ranks): rank {r} holds {expected:?}",
                        rank.chunks,
                        self.chunks.len()
                    ),
                    "Give rank r the chunks r, r + K, r + 2K, …, with the same number of chunks on every rank.",
                ));
            }
            if schedule.needs().microbatches_multiple_of_ranks
                && !(self.microbatches / replicas).is_multiple_of(k)
            {
                return Err(bad(
                    "microbatches",
                    format!(
                        "{}, and interleaved 1F1B needs each replica's share to be a multiple of its ranks ({k})",
                        self.microbatches
                    ),
                    REPLAN,
                ));
            }
        } else if rank.chunks.len() != 1 {
            return Err(bad(
                &key("chunks"),
                format!(
                    "{:?}: schedule \"{}\" runs one chunk per rank (only interleaved-1f1b runs several)",
                    rank.chunks, self.schedule
                ),
                "Give every rank one chunk.",
            ));
        }
        Ok(())
    }
}

/// Gives rank `r` the `chunks` it holds in its replica's chunk → rank table (`usize::MAX`:
/// not held yet).
fn claim(
    file: &str,
    r: usize,
    chunks: &[usize],
    chunk_rank: &mut [usize],
) -> Result<(), ConfigError> {
    let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
    let key = |f: &str| format!("ranks[{r}].{f}");
    for &c in chunks {
        match chunk_rank.get_mut(c) {
            None => {
                return Err(bad(
                    &key("chunks"),
                    format!(
                        "chunk {c} does not exist (the plan has {})",
                        chunk_rank.len()
                    ),
                    "Name chunks by their id.",
                ));
            }
            Some(slot) if *slot != usize::MAX => {
                return Err(bad(
                    &key("chunks"),
                    format!("chunk {c} is also held by rank {slot}"),
                    "Give every chunk to exactly one rank.",
                ));
            }
            Some(slot) => *slot = r,
        }
    }
    Ok(())
}
