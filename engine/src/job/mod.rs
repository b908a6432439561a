//! The job plan: the one artifact every process of a job runs from.
//!
//! `brigade plan FILE --out job.json` writes it; `train`, `launch`, `stage` and `simulate`
//! read it wherever they read a topology. It holds the topology it was made from (the TOML
//! text and the `--set` overrides, validated again on load), the **chunks** (contiguous layer
//! ranges), the **ranks** (one stage process each: a host, a device and the chunks it holds),
//! the **edges** (producer chunk → consumer chunk: the activation's shape, dtype and byte
//! limit; the gradient flows back along the same edge), the schedule and micro-batches, and a
//! hash that identifies the job. A launcher plans once and hands every stage the plan; a stage
//! never re-plans, and peers whose plans differ refuse each other at the handshake.
//!
//! [`JobPlan`] is the file as written; [`Job`] is the validated plan (built only by
//! [`JobPlan::validate`]), with its per-rank instruction lists computed once.

mod build;
mod explain;
mod input;
mod validate;
mod validate_ranks;

use crate::schedule::{ChunkSlot, Instr, peak_live_of};
use brigade_partitioner::plan::{Alternative, Plan};
use brigade_partitioner::{Placement, ScheduleKind, Topology};
use serde::{Deserialize, Serialize};

pub use brigade_stages::data::parquet::DataFacts;

pub use build::job_from_plan;
pub use explain::explain;
pub use input::{Input, elastic_shape, load_input, load_planned, load_topology, read_plan, replan};

/// `format` of every job plan file.
pub const FORMAT: &str = "brigade-job-plan";
/// Bumped on any change of the file's meaning.
pub const VERSION: u32 = 1;

/// A job plan file, as written and read (not yet validated).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobPlan {
    /// Always "brigade-job-plan".
    pub format: String,
    /// The file format's version ([`VERSION`]).
    pub version: u32,
    /// The brigade version that wrote it; another version refuses the file.
    pub brigade_version: String,
    /// 16 hex digits identifying the job (see [`Job::hash`]). Checked on load when present:
    /// after editing a plan by hand, delete this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_hash: Option<String>,
    pub topology: TopologySource,
    /// "gpipe", "1f1b", "interleaved-1f1b" or "zb-h1" (the topology's `train.schedule`).
    pub schedule: String,
    pub microbatches: usize,
    pub chunks: Vec<ChunkSpec>,
    pub ranks: Vec<RankSpec>,
    pub edges: Vec<EdgeSpec>,
    /// What the data held when the plan was made (Parquet sources only): ranks that read no
    /// data learn from it how many validation micro-batches pass through them, and readers
    /// check the files still hold as many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataFacts>,
    /// What the planner predicted for this split, an [`Explain`] when brigade wrote it (for
    /// people; never read back, so editing or deleting it changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<serde_json::Value>,
}

/// The topology a plan was made from: validated again whenever the plan is loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopologySource {
    /// The file it was read from (for messages).
    pub file: String,
    /// The file's TOML text.
    pub toml: String,
    /// `--set` overrides applied on top.
    pub overrides: Vec<String>,
}

/// A contiguous range of layers that runs as one unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChunkSpec {
    pub id: usize,
    /// `[start, end)` layer indices.
    pub layers: [usize; 2],
    /// `[micro-batch, ..]` of the chunk's input and output.
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
}

/// One stage process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RankSpec {
    pub rank: usize,
    /// A `[[hosts]]` name of the topology.
    pub host: String,
    /// Index into that host's `devices`.
    pub device: usize,
    /// That device, as written in the topology ("cpu", "cuda:0"); checked on load.
    pub device_kind: String,
    /// Chunk ids this rank holds.
    pub chunks: Vec<usize>,
    /// The copy of the pipeline this rank belongs to (`partition.replicas`; absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// A tensor crossing from one chunk to another: activations forward, gradients back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    pub id: usize,
    pub from_chunk: usize,
    pub to_chunk: usize,
    /// `[micro-batch, ..]`.
    pub shape: Vec<usize>,
    /// Element type on the wire: the topology's `train.dtype` ("f32", "bf16" or "f16").
    pub dtype: String,
    /// The largest payload a message on this edge may declare; a larger frame is refused
    /// before anything is allocated.
    pub max_bytes: u64,
    /// The layer whose output it carries, in models with skip connections (absent: the
    /// producing chunk's last layer, as in every chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
}

/// The planner's explanation of the split (the `plan --json` report).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explain {
    pub plan: Plan,
    pub alternatives: Vec<Alternative>,
}

/// A validated job plan.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file it came from (a plan file, or the topology it was planned from).
    pub file: String,
    pub plan: JobPlan,
    pub topo: Topology,
    pub schedule: ScheduleKind,
    /// Identifies the job: peers with another hash refuse each other.
    pub hash: u64,
    /// Where each rank runs.
    pub places: Vec<Placement>,
    /// Which rank holds each chunk (in replica 0).
    pub chunk_rank: Vec<usize>,
    /// Which rank holds each chunk, per replica.
    pub chunk_ranks: Vec<Vec<usize>>,
    /// Each rank's instructions for one step.
    pub instructions: Vec<Vec<Instr>>,
    /// Each rank's instructions for one evaluation (empty without validation data).
    pub eval_instructions: Vec<Vec<Instr>>,
}

/// The ranks and direction of one edge's traffic, as one rank sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeEnds {
    pub edge: usize,
    pub producer: usize,
    pub consumer: usize,
}

impl Job {
    pub fn ranks(&self) -> usize {
        self.plan.ranks.len()
    }

    pub fn chunks(&self) -> &[ChunkSpec] {
        &self.plan.chunks
    }

    pub fn edges(&self) -> &[EdgeSpec] {
        &self.plan.edges
    }

    /// The ranks an edge joins (in replica 0).
    pub fn ends(&self, edge: usize) -> EdgeEnds {
        self.ends_in(0, edge)
    }

    /// The ranks an edge joins in `replica`.
    pub fn ends_in(&self, replica: usize, edge: usize) -> EdgeEnds {
        let e = &self.plan.edges[edge];
        EdgeEnds {
            edge,
            producer: self.chunk_ranks[replica][e.from_chunk],
            consumer: self.chunk_ranks[replica][e.to_chunk],
        }
    }

    /// Copies of the pipeline.
    pub fn replicas(&self) -> usize {
        self.chunk_ranks.len()
    }

    /// Ranks in one replica.
    pub fn ranks_per_replica(&self) -> usize {
        self.ranks() / self.replicas()
    }

    /// The replica rank `rank` belongs to.
    pub fn replica_of(&self, rank: usize) -> usize {
        self.plan.ranks[rank].replica
    }

    /// The ring of ranks holding `chunk` (one per replica, in replica order).
    pub fn chunk_ring(&self, chunk: usize) -> Vec<usize> {
        self.chunk_ranks.iter().map(|r| r[chunk]).collect()
    }

    /// The rank holding the last chunk in replica 0 (it reports losses and evaluations).
    pub fn last_rank(&self) -> usize {
        self.chunk_rank[self.plan.chunks.len() - 1]
    }

    /// What a schedule needs to know about `chunk`.
    pub fn slot(&self, chunk: usize) -> ChunkSlot {
        let ids = |f: &dyn Fn(&EdgeSpec) -> bool| -> Vec<u32> {
            self.plan
                .edges
                .iter()
                .filter(|e| f(e))
                .map(|e| e.id as u32)
                .collect()
        };
        ChunkSlot {
            chunk: chunk as u32,
            position: chunk,
            depth: self.plan.chunks.len(),
            input: crate::schedule::EdgeSet::of(&ids(&|e| e.to_chunk == chunk)),
            output: crate::schedule::EdgeSet::of(&ids(&|e| e.from_chunk == chunk)),
        }
    }

    /// The layer whose output edge `e` carries.
    pub fn edge_tensor(&self, e: usize) -> usize {
        let spec = &self.plan.edges[e];
        spec.layer
            .unwrap_or(self.plan.chunks[spec.from_chunk].layers[1] - 1)
    }

    /// The host name a rank runs on.
    pub fn host_name(&self, rank: usize) -> &str {
        &self.plan.ranks[rank].host
    }

    /// The job hash as written in plan files and messages.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Whether the job evaluates on validation data.
    pub fn evaluates(&self) -> bool {
        self.plan.data.is_some_and(|d| d.validation_rows > 0)
    }

    /// Validation micro-batches per evaluation (of the training micro-batch size; the last
    /// may be short).
    pub fn eval_microbatches(&self) -> usize {
        let rows = self.plan.data.map_or(0, |d| d.validation_rows) as usize;
        rows.div_ceil(self.topo.train.microbatch_size())
    }

    /// Micro-batches each chunk keeps alive at its peak, counted from its rank's list.
    pub fn chunk_live(&self) -> Vec<u64> {
        (0..self.plan.chunks.len())
            .map(|c| peak_live_of(&self.instructions[self.chunk_rank[c]], c as u32) as u64)
            .collect()
    }
}
