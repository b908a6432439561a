//! Building a stage's executor from a topology and its plan.

use super::core::Executor;
use crate::schedule::schedule;
use crate::trace::Tracer;
use brigade_partitioner::Topology;
use brigade_partitioner::plan::Plan;
use brigade_stages::{Stage, SyntheticData};
use burn::prelude::Device;

/// The executor of stage `k` of `plan`, on `device`, running `steps` steps.
pub fn executor(
    topo: &Topology,
    plan: &Plan,
    k: usize,
    device: &Device,
    steps: u64,
    trace: bool,
) -> Executor {
    let [start, end] = plan.stages[k].layers;
    let stage = Stage::new(topo, k, start..end, device);
    let list = schedule(
        topo.train.schedule,
        plan.stages.len(),
        topo.train.microbatches,
    )
    .swap_remove(k);
    Executor::new(
        stage,
        SyntheticData::new(topo),
        plan.stages.len(),
        topo.train.microbatches,
        list,
        steps,
        Tracer::new(k, 0, trace),
    )
}
