//! From a topology to a plan and its simulated step: what `plan`, `simulate`, `train` and the
//! stage processes all start from.

use crate::schedule::schedule;
use crate::sim::{SimError, SimReport, StageCost, simulate};
use brigade_partitioner::plan::{self, Alternative, Plan};
use brigade_partitioner::{ConfigError, Costs, LayerGraph, Profile, Topology};

/// A topology with its plan.
pub struct Planned {
    pub topo: Topology,
    pub graph: LayerGraph,
    pub costs: Costs,
    pub plan: Plan,
    pub alternatives: Vec<Alternative>,
    /// The chosen schedule simulated with the plan's costs.
    pub sim: SimReport,
}

/// Plans `topo` (with measured costs from `profile` if given) and simulates its schedule; a
/// schedule that deadlocks or a model that does not fit is reported as bad input.
pub fn make_plan(topo: Topology, profile: Option<&str>) -> Result<Planned, ConfigError> {
    let graph = LayerGraph::from_model(&topo.model);
    let costs = match profile {
        Some(path) => Costs::from_profile(&topo, &graph, &Profile::load(path)?, path)?,
        None => Costs::estimate(&graph, topo.train.microbatch_size()),
    };
    let mut plan = plan::plan(&topo, &graph, &costs).map_err(|e| {
        ConfigError::invalid(
            &topo.file,
            "partition",
            e,
            "Give the devices more memory (hosts.memory), use more stages, or keep fewer micro-batches alive (train.schedule = \"1f1b\").",
        )
    })?;
    let alternatives = plan::alternatives(&plan::problem(&topo, &costs));
    let sim = simulate_plan(&topo, &plan, &costs, true).map_err(|e| {
        ConfigError::invalid(
            &topo.file,
            "train.schedule",
            e,
            "This is a bug in brigade's schedules; please report it.",
        )
    })?;
    // The simulator knows the schedule's real fill, drain and link queues; prefer it to the
    // planner's closed form.
    plan.step_ms = sim.step_ms;
    plan.speedup = if sim.step_ms > 0.0 {
        plan.single_device_ms / sim.step_ms
    } else {
        1.0
    };
    Ok(Planned {
        topo,
        graph,
        costs,
        plan,
        alternatives,
        sim,
    })
}

/// Per-stage costs of a plan for the simulator; `with_links = false` makes communication free
/// (the ideal a pipeline is measured against).
pub fn stage_costs(
    topo: &Topology,
    plan: &Plan,
    costs: &Costs,
    with_links: bool,
) -> Vec<StageCost> {
    let places = topo.placements();
    let k_total = plan.stages.len();
    plan.stages
        .iter()
        .enumerate()
        .map(|(k, st)| {
            let link = |to: usize, bytes: u64| {
                if with_links {
                    topo.transfer_ms(places[k].host, places[to].host, bytes)
                } else {
                    0.0
                }
            };
            let params = st.params as f64;
            let speed = topo.device(&places[k]).speed_gflops;
            StageCost {
                forward_ms: st.forward_ms,
                backward_ms: st.backward_ms,
                // A few FLOPs per parameter and optimizer state copy.
                optimizer_ms: params * (2 + 2 * topo.train.optimizer.state_copies()) as f64
                    / (speed * 1e9)
                    * 1e3,
                send_act_ms: if k + 1 < k_total {
                    link(k + 1, costs.cut_bytes[st.layers[1]])
                } else {
                    0.0
                },
                send_grad_ms: if k > 0 {
                    link(k - 1, costs.cut_bytes[st.layers[0]])
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// Simulates one step of `plan` under the topology's schedule.
pub fn simulate_plan(
    topo: &Topology,
    plan: &Plan,
    costs: &Costs,
    with_links: bool,
) -> Result<SimReport, SimError> {
    let lists = schedule(
        topo.train.schedule,
        plan.stages.len(),
        topo.train.microbatches,
    );
    simulate(&lists, &stage_costs(topo, plan, costs, with_links))
}
