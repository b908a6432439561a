//! Building a stage's executor from a topology and its plan.

use super::core::Executor;
use crate::schedule::schedule;
use crate::trace::Tracer;
use brigade_partitioner::Topology;
use brigade_partitioner::plan::Plan;
use brigade_stages::{Stage, SyntheticData};
use burn::prelude::Device;

/// The executor of stage `k` of `plan`, on `device`, running until `steps` steps are done.
pub fn executor(
    topo: &Topology,
    plan: &Plan,
    k: usize,
    device: &Device,
    steps: u64,
    trace: bool,
) -> Executor {
    let [start, end] = plan.stages[k].layers;
    executor_for(
        topo,
        plan,
        Stage::new(topo, k, start..end, device),
        steps,
        trace,
    )
}

/// The executor of a stage already built (and possibly restored from a checkpoint).
pub fn executor_for(
    topo: &Topology,
    plan: &Plan,
    stage: Stage,
    steps: u64,
    trace: bool,
) -> Executor {
    let k = stage.index();
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
