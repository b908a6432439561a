//! Building a rank's executor from the job plan, and the one-rank reference trainer's.

use super::core::{EdgeRoute, Executor, NormRing, Program, Replication, TieRing};
use crate::job::Job;
use crate::schedule::{ChunkSlot, eval_schedule, one_f_one_b};
use crate::trace::Tracer;
use brigade_partitioner::{ConfigError, Topology};
use brigade_stages::data::parquet::ParquetData;
use brigade_stages::{Batches, Role, Share, Stage};
use burn::prelude::Device;

/// What rank `rank` of `job` runs.
pub fn program(job: &Job, rank: usize) -> Program {
    Program {
        rank,
        edges: (0..job.edges().len())
            .map(|e| {
                let ends = job.ends_in(job.replica_of(rank), e);
                let spec = &job.edges()[e];
                EdgeRoute {
                    from_chunk: spec.from_chunk,
                    to_chunk: spec.to_chunk,
                    producer: ends.producer,
                    consumer: ends.consumer,
                    tensor: job.edge_tensor(e),
                }
            })
            .collect(),
        list: job.instructions[rank].clone(),
        microbatches: job.plan.microbatches / job.replicas(),
        eval: job.eval_instructions[rank].clone(),
        eval_microbatches: job.eval_microbatches(),
        eval_every: job.topo.eval.every,
        replicas: replication(job, rank),
        norm: norm_ring(job, rank),
        tie: tie_ring(job, rank),
    }
}

/// Where rank `rank`'s replica keeps the two copies of a tied weight.
pub fn tie_ring(job: &Job, rank: usize) -> Option<TieRing> {
    job.topo.model.tied_layers()?;
    let ranks = &job.chunk_ranks[job.replica_of(rank)];
    Some(TieRing {
        ranks: [ranks[0], ranks[ranks.len() - 1]],
        id: job.chunks().len() + 1,
    })
}

/// The ring summing the gradient norm over every rank, when the job clips on several ranks.
pub fn norm_ring(job: &Job, rank: usize) -> Option<NormRing> {
    (job.topo.train.clip_grad_norm.is_some() && job.ranks() > 1).then(|| NormRing {
        ranks: (0..job.ranks()).collect(),
        me: rank,
        layers: job.topo.model.graph().len(),
        counts: job.replica_of(rank) == 0,
        id: job.chunks().len(),
    })
}

/// Rank `rank`'s place among the replicas: its micro-batches within each step, and the ring
/// of ranks holding each of its chunks.
pub fn replication(job: &Job, rank: usize) -> Replication {
    let d = job.replica_of(rank);
    let per_replica = job.plan.microbatches / job.replicas();
    Replication {
        replica: d,
        mb_offset: (d * per_replica) as u64,
        total_microbatches: job.plan.microbatches as u64,
        rings: job.plan.ranks[rank]
            .chunks
            .iter()
            .map(|&c| (c, job.chunk_ring(c)))
            .collect(),
        bucket_bytes: job.topo.partition.bucket_bytes(),
    }
}

/// What rank `rank` reads from the data: inputs if it holds the first chunk, targets if it
/// holds the last, of its replica's micro-batches only.
pub fn role(job: &Job, rank: usize) -> Role {
    let chunks = &job.plan.ranks[rank].chunks;
    let r = replication(job, rank);
    let share = match job.replicas() {
        1 => Share::Whole,
        _ => Share::Part {
            first: r.mb_offset,
            count: (job.plan.microbatches / job.replicas()) as u64,
        },
    };
    Role {
        inputs: chunks.contains(&0),
        targets: chunks.contains(&(job.chunks().len() - 1)),
        share,
    }
}

/// Rank `rank`'s data from step `start_step` on, checked against what the plan recorded.
pub fn data(job: &Job, rank: usize, start_step: u64) -> Result<Box<dyn Batches>, ConfigError> {
    let role = role(job, rank);
    if let (Some(facts), Some(_)) = (job.plan.data, job.topo.data.parquet())
        && (role.inputs || role.targets)
    {
        let data = ParquetData::open(&job.topo, role, start_step)?;
        if data.facts() != facts {
            return Err(ConfigError::invalid(
                &job.file,
                "data",
                format!(
                    "the plan was made for {} training and {} validation rows, but the data now holds {} and {}",
                    facts.train_rows,
                    facts.validation_rows,
                    data.facts().train_rows,
                    data.facts().validation_rows
                ),
                "The files changed since the plan was made: write the plan again (`brigade plan TOPOLOGY --out FILE`).",
            ));
        }
        return Ok(Box::new(data));
    }
    brigade_stages::data::open(&job.topo, role, start_step)
}

/// The chunks rank `rank` of `job` holds, freshly initialised on `device` (from the model's
/// Hugging Face checkpoint when it has one).
pub fn stages(job: &Job, rank: usize, device: &Device) -> Result<Vec<Stage>, ConfigError> {
    job.plan.ranks[rank]
        .chunks
        .iter()
        .map(|&c| {
            let [a, b] = job.chunks()[c].layers;
            let mut s = Stage::new(&job.topo, c, a..b, device);
            brigade_stages::hf::load_initial(&mut s, &job.topo)?;
            Ok(s)
        })
        .collect()
}

/// The executor of rank `rank` of `job` on `device`, fresh, running until `steps` steps are
/// done.
pub fn executor(
    job: &Job,
    rank: usize,
    device: &Device,
    steps: u64,
    trace: bool,
) -> Result<Executor, ConfigError> {
    Ok(Executor::new(
        program(job, rank),
        stages(job, rank, device)?,
        data(job, rank, 0)?,
        steps,
        Tracer::new(rank, 0, trace),
    ))
}

/// The reference trainer's program: the whole model as chunk 0 of a one-rank job, forward and
/// backward alternating per micro-batch (1F1B on one chunk), so it keeps one micro-batch alive.
/// Gradients accumulate in micro-batch order, as on every split.
/// `eval_microbatches`: validation micro-batches per evaluation (0: none).
pub fn reference_program(topo: &Topology, eval_microbatches: usize) -> Program {
    Program {
        rank: 0,
        edges: Vec::new(),
        list: one_f_one_b(ChunkSlot::chain(0, 1), topo.train.microbatches),
        microbatches: topo.train.microbatches,
        eval: eval_schedule(&[ChunkSlot::chain(0, 1)], eval_microbatches),
        eval_microbatches,
        eval_every: topo.eval.every,
        replicas: Replication::default(),
        norm: None,
        tie: topo.model.tied_layers().map(|_| TieRing {
            ranks: [0, 0],
            id: 2,
        }),
    }
}
