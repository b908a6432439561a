//! Building a rank's executor from the job plan, and the one-rank reference trainer's.

use super::core::{EdgeRoute, Executor, Program};
use crate::job::Job;
use crate::schedule::{ChunkSlot, one_f_one_b};
use crate::trace::Tracer;
use brigade_partitioner::Topology;
use brigade_stages::{Stage, SyntheticData};
use burn::prelude::Device;

/// What rank `rank` of `job` runs.
pub fn program(job: &Job, rank: usize) -> Program {
    Program {
        rank,
        edges: (0..job.edges().len())
            .map(|e| {
                let ends = job.ends(e);
                let spec = &job.edges()[e];
                EdgeRoute {
                    from_chunk: spec.from_chunk,
                    to_chunk: spec.to_chunk,
                    producer: ends.producer,
                    consumer: ends.consumer,
                }
            })
            .collect(),
        list: job.instructions[rank].clone(),
        microbatches: job.plan.microbatches,
    }
}

/// The chunks rank `rank` of `job` holds, freshly initialised on `device`.
pub fn stages(job: &Job, rank: usize, device: &Device) -> Vec<Stage> {
    job.plan.ranks[rank]
        .chunks
        .iter()
        .map(|&c| {
            let [a, b] = job.chunks()[c].layers;
            Stage::new(&job.topo, c, a..b, device)
        })
        .collect()
}

/// The executor of rank `rank` of `job` on `device` with synthetic data, fresh, running until
/// `steps` steps are done.
pub fn executor(job: &Job, rank: usize, device: &Device, steps: u64, trace: bool) -> Executor {
    Executor::new(
        program(job, rank),
        stages(job, rank, device),
        Box::new(SyntheticData::new(&job.topo)),
        steps,
        Tracer::new(rank, 0, trace),
    )
}

/// The reference trainer's program: the whole model as chunk 0 of a one-rank job, forward and
/// backward alternating per micro-batch (1F1B on one chunk), so it keeps one micro-batch alive.
/// Gradients accumulate in micro-batch order, as on every split.
pub fn reference_program(topo: &Topology) -> Program {
    Program {
        rank: 0,
        edges: Vec::new(),
        list: one_f_one_b(ChunkSlot::chain(0, 1), topo.train.microbatches),
        microbatches: topo.train.microbatches,
    }
}
