//! From a plan file's contents to a [`Job`]: every field checked against the topology it
//! carries, so that a hand-edited, corrupt or foreign plan is one clear error naming the file
//! and the field, never a panic in a stage.

use super::{FORMAT, Job, JobPlan, VERSION};
use crate::identity::topology_hash;
use crate::schedule::{eval_schedule, rank_schedule, with_all_reduce};
use brigade_partitioner::{ConfigError, LayerGraph, Placement, ScheduleKind};
use sha2::{Digest, Sha256};

const REPLAN: &str = "Write the plan again with this brigade: `brigade plan TOPOLOGY --out FILE`.";

impl JobPlan {
    /// The job hash of this plan's content (everything but `job_hash` and `explain`), given
    /// its validated topology's hash.
    fn content_hash(&self, topology: u64) -> u64 {
        let content = (
            VERSION,
            format!("{topology:016x}"),
            &self.schedule,
            self.microbatches,
            &self.chunks,
            &self.ranks,
            &self.edges,
        );
        let mut json = serde_json::to_vec(&content).expect("a plan always serialises");
        // Appended only when present, so plans of synthetic data hash as they always did.
        if let Some(d) = &self.data {
            json.extend(serde_json::to_vec(d).expect("facts always serialise"));
        }
        let digest = Sha256::digest(&json);
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// Checks the plan (read from `file`) and computes what running it needs.
    pub fn validate(self, file: &str) -> Result<Job, ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        if self.format != FORMAT {
            return Err(bad(
                "format",
                format!("\"{}\" is not a brigade job plan", self.format),
                "Give a topology (TOML) or a plan written by `brigade plan --out`.",
            ));
        }
        let ours = env!("CARGO_PKG_VERSION");
        if self.version != VERSION || self.brigade_version != ours {
            return Err(bad(
                "version",
                format!(
                    "the plan was written by brigade {} (plan format {}); this is brigade {ours} (plan format {VERSION})",
                    self.brigade_version, self.version
                ),
                REPLAN,
            ));
        }
        let mut topo = brigade_partitioner::parse(
            &format!("{file} (topology from {})", self.topology.file),
            &self.topology.toml,
            &self.topology.overrides,
        )?;
        topo.data.set_base(&self.topology.file);
        let schedule = ScheduleKind::from_name(&self.schedule)
            .filter(|s| *s == topo.train.schedule)
            .ok_or_else(|| {
                bad(
                    "schedule",
                    format!(
                        "\"{}\", but its topology says train.schedule = \"{}\"",
                        self.schedule,
                        topo.train.schedule.name()
                    ),
                    REPLAN,
                )
            })?;
        if self.microbatches != topo.train.microbatches {
            return Err(bad(
                "microbatches",
                format!(
                    "{}, but its topology says train.microbatches = {}",
                    self.microbatches, topo.train.microbatches
                ),
                REPLAN,
            ));
        }

        // Chunks: contiguous layer ranges covering the model once, in order.
        let graph = LayerGraph::from_model(&topo.model);
        let n = graph.len();
        let mbs = topo.train.microbatch_size();
        let with_batch = |s: &[usize]| std::iter::once(mbs).chain(s.iter().copied()).collect();
        if self.chunks.is_empty() {
            return Err(bad("chunks", "no chunks".into(), REPLAN));
        }
        let mut next = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            let [a, b] = c.layers;
            if c.id != i {
                return Err(bad(
                    &format!("chunks[{i}].id"),
                    format!("{}, expected {i} (chunks are numbered in order)", c.id),
                    REPLAN,
                ));
            }
            if a != next || b <= a || b > n {
                return Err(bad(
                    &format!("chunks[{i}].layers"),
                    format!(
                        "[{a}, {b}], but chunks must cover layers 0..{n} in order without gaps (this one must start at {next})"
                    ),
                    "Fix the layer ranges or write the plan again with `brigade plan --out`.",
                ));
            }
            next = b;
            let (input, output): (Vec<usize>, Vec<usize>) = (
                with_batch(&graph.layer(a).input_shape),
                with_batch(&graph.layer(b - 1).output_shape),
            );
            if c.input_shape != input || c.output_shape != output {
                return Err(bad(
                    &format!("chunks[{i}]"),
                    format!(
                        "shapes {:?} → {:?}, but layers {a}..{b} of the model take {input:?} and give {output:?}",
                        c.input_shape, c.output_shape
                    ),
                    REPLAN,
                ));
            }
        }
        if next != n {
            return Err(bad(
                "chunks",
                format!("cover layers 0..{next}, but the model has {n} layers"),
                REPLAN,
            ));
        }

        // Ranks: each on a device of the topology, holding one chunk; each chunk held once.
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
            let chunk_rank = &mut chunk_ranks[rank.replica];
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
            for &c in &rank.chunks {
                match chunk_rank.get_mut(c) {
                    None => {
                        return Err(bad(
                            &key("chunks"),
                            format!(
                                "chunk {c} does not exist (the plan has {})",
                                self.chunks.len()
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
            places.push(Placement {
                host: h,
                device: rank.device,
            });
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

        // Edges: one per tensor crossing between chunks (chunk i → chunk i+1 in a chain).
        let expected = super::build::edges_of(&topo, &self.chunks);
        if self.edges.len() != expected.len() {
            return Err(bad(
                "edges",
                format!(
                    "{} edges for these chunks; the model's tensors cross between them on {}",
                    self.edges.len(),
                    expected.len()
                ),
                REPLAN,
            ));
        }
        for (i, (e, want)) in self.edges.iter().zip(&expected).enumerate() {
            if e != want {
                return Err(bad(
                    &format!("edges[{i}]"),
                    format!(
                        "{e:?}; expected edge {i} from chunk {} to chunk {} carrying {} {:?} ({} bytes)",
                        want.from_chunk, want.to_chunk, want.dtype, want.shape, want.max_bytes
                    ),
                    REPLAN,
                ));
            }
        }
        for c in 0..self.chunks.len() {
            let ins = expected.iter().filter(|e| e.to_chunk == c).count();
            let outs = expected.iter().filter(|e| e.from_chunk == c).count();
            if ins.max(outs) > crate::schedule::EdgeSet::MAX {
                return Err(bad(
                    "edges",
                    format!(
                        "chunk {c} receives {ins} and sends {outs} tensors; at most {} each way",
                        crate::schedule::EdgeSet::MAX
                    ),
                    "Cut the model elsewhere (fewer skip connections across one chunk).",
                ));
            }
        }

        match (topo.data.parquet().is_some(), self.data.is_some()) {
            (true, false) => {
                return Err(bad(
                    "data",
                    "missing: the topology reads Parquet data, and the plan must record its rows"
                        .into(),
                    REPLAN,
                ));
            }
            (false, true) => {
                return Err(bad(
                    "data",
                    "present, but the topology's data is synthetic".into(),
                    "Delete the \"data\" entry, or write the plan again.",
                ));
            }
            _ => {}
        }
        let hash = self.content_hash(topology_hash(&topo));
        if let Some(written) = &self.job_hash
            && *written != format!("{hash:016x}")
        {
            return Err(bad(
                "job_hash",
                format!(
                    "{written}, but the plan's content hashes to {hash:016x}: the file was changed after `brigade plan` wrote it"
                ),
                "If you edited it on purpose, delete the job_hash line; otherwise write the plan again.",
            ));
        }
        let mut job = Job {
            file: file.to_string(),
            plan: self,
            topo,
            schedule,
            hash,
            places,
            chunk_rank: chunk_ranks[0].clone(),
            chunk_ranks,
            instructions: Vec::new(),
            eval_instructions: Vec::new(),
        };
        let eval_mbs = if job.evaluates() {
            job.eval_microbatches()
        } else {
            0
        };
        for r in &job.plan.ranks {
            let mut chunks = r.chunks.clone();
            chunks.sort_unstable();
            let slots: Vec<_> = chunks.iter().map(|&c| job.slot(c)).collect();
            let list = rank_schedule(schedule, &slots, k, job.plan.microbatches / replicas);
            job.instructions.push(with_all_reduce(list, replicas));
            // Replica 0 evaluates for everyone (the replicas hold the same parameters).
            let eval = if r.replica == 0 { eval_mbs } else { 0 };
            job.eval_instructions.push(eval_schedule(&slots, eval));
        }
        Ok(job)
    }
}
