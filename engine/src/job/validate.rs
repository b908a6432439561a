//! From a plan file's contents to a [`Job`]: every field checked against the topology it
//! carries, so that a hand-edited, corrupt or foreign plan is one clear error naming the file
//! and the field, never a panic in a stage.

use super::{FORMAT, Job, JobPlan, VERSION};
use crate::identity::topology_hash;
use crate::schedule::{eval_schedule, rank_schedule, with_all_reduce};
use brigade_partitioner::{ConfigError, ScheduleKind, Topology};
use sha2::{Digest, Sha256};

pub(super) const REPLAN: &str =
    "Write the plan again with this brigade: `brigade plan TOPOLOGY --out FILE`.";

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
        self.check_format(file)?;
        let topo = brigade_partitioner::parse_at(
            &format!("{file} (topology from {})", self.topology.file),
            &self.topology.file,
            &self.topology.toml,
            &self.topology.overrides,
        )?;
        let schedule = self.check_schedule(file, &topo)?;
        self.check_chunks(file, &topo)?;
        let (places, chunk_ranks) = self.check_ranks(file, &topo, schedule)?;
        self.check_edges(file, &topo)?;
        self.check_data(file, &topo)?;
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
        let replicas = job.topo.partition.replicas;
        let k = job.plan.ranks.len() / replicas;
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

    /// The file is a plan of this brigade's format.
    fn check_format(&self, file: &str) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The schedule and micro-batches are the topology's.
    fn check_schedule(&self, file: &str, topo: &Topology) -> Result<ScheduleKind, ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
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
        Ok(schedule)
    }

    /// Chunks: contiguous layer ranges covering the model once, in order.
    fn check_chunks(&self, file: &str, topo: &Topology) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        let graph = topo.model.graph();
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
        Ok(())
    }

    /// Edges: one per tensor crossing between chunks (chunk i → chunk i+1 in a chain).
    fn check_edges(&self, file: &str, topo: &Topology) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
        let expected = super::build::edges_of(topo, &self.chunks);
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

        Ok(())
    }

    /// Parquet data has its rows recorded; synthetic data none.
    fn check_data(&self, file: &str, topo: &Topology) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String, fix: &str| ConfigError::invalid(file, key, why, fix);
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
        Ok(())
    }
}
