//! From a topology to a plan and its simulated step: what `plan` prints and writes, and what a
//! job plan read from a file is explained with (`crate::job::explain`).

use crate::schedule::{chain_schedule, peak_live};
use crate::sim::{ChunkCost, EdgeCost, SimCosts, SimError, SimReport, simulate};
use brigade_partitioner::plan::{self, Alternative, Plan};
use brigade_partitioner::{ConfigError, Costs, LayerGraph, Placement, Profile, Topology};

/// A plan with everything needed to explain it.
pub struct Planned {
    pub topo: Topology,
    pub graph: LayerGraph,
    pub costs: Costs,
    pub plan: Plan,
    pub alternatives: Vec<Alternative>,
    /// The chosen schedule simulated with the plan's costs.
    pub sim: SimReport,
    /// Where each chunk (stage of `plan`) runs.
    pub places: Vec<Placement>,
    /// Which rank holds each chunk.
    pub chunk_rank: Vec<usize>,
    /// The planner turned recomputation on because no split fits memory without it.
    pub auto_recompute: bool,
}

/// Estimated costs, or measured ones from a `brigade profile` file.
pub fn costs_for(
    topo: &Topology,
    graph: &LayerGraph,
    profile: Option<&str>,
) -> Result<Costs, ConfigError> {
    let costs = match profile {
        Some(path) => Costs::from_profile(topo, graph, &Profile::load(path)?, path)?,
        None => Costs::estimate(graph, topo.train.microbatch_size()),
    };
    // Activations, gradients and what layers keep for backward are in the training dtype;
    // parameters stay f32.
    Ok(costs.with_activation_bytes_per_element(topo.train.dtype.size()))
}

/// Micro-batches each stage of the topology's pipeline keeps alive, counted from the schedule's
/// own instruction lists.
pub fn live_counts(topo: &Topology) -> Vec<u64> {
    chain_schedule(
        topo.train.schedule,
        topo.partition.stages,
        topo.train.microbatches,
    )
    .iter()
    .map(|l| peak_live(l) as u64)
    .collect()
}

/// Plans `topo` (with measured costs from `profile` if given) and simulates its schedule; a
/// schedule that deadlocks or a model that does not fit is reported as bad input.
pub fn make_plan(topo: Topology, profile: Option<&str>) -> Result<Planned, ConfigError> {
    let graph = LayerGraph::from_model(&topo.model);
    let costs = costs_for(&topo, &graph, profile)?;
    let live = live_counts(&topo);
    let plan = plan::plan(&topo, &graph, &costs, &live).map_err(|e| {
        ConfigError::invalid(
            &topo.file,
            "partition",
            e,
            "Give the devices more memory (hosts.memory), use more stages, keep fewer micro-batches alive (train.schedule = \"1f1b\"), or recompute activations (train.recompute = true).",
        )
    })?;
    let alternatives = plan::alternatives(&plan::problem(&topo, &costs, &live));
    let places = topo.placements();
    let chunk_rank = (0..plan.stages.len()).collect();
    finish(topo, graph, costs, plan, alternatives, places, chunk_rank)
}

/// The plan's simulated step, filled in (shared by [`make_plan`] and the job plan's
/// explanation).
pub(crate) fn finish(
    topo: Topology,
    graph: LayerGraph,
    costs: Costs,
    mut plan: Plan,
    alternatives: Vec<Alternative>,
    places: Vec<Placement>,
    chunk_rank: Vec<usize>,
) -> Result<Planned, ConfigError> {
    let mut p = Planned {
        topo,
        graph,
        costs,
        plan: plan.clone(),
        alternatives,
        sim: SimReport {
            step_ms: 0.0,
            stages: Vec::new(),
            spans: Vec::new(),
        },
        places,
        chunk_rank,
        auto_recompute: false,
    };
    let sim = p.simulate(true).map_err(|e| {
        ConfigError::invalid(
            &p.topo.file,
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
    p.plan = plan;
    p.sim = sim;
    Ok(p)
}

impl Planned {
    /// What the simulator charges for this plan; `with_links = false` makes communication
    /// free (the ideal a pipeline is measured against).
    pub fn sim_costs(&self, with_links: bool) -> SimCosts {
        let topo = &self.topo;
        let chunks = self
            .plan
            .stages
            .iter()
            .zip(&self.places)
            .map(|(st, place)| {
                let speed = topo.device(place).speed_gflops;
                ChunkCost {
                    forward_ms: st.forward_ms,
                    backward_ms: st.backward_ms,
                    // A few FLOPs per parameter and optimizer state copy.
                    optimizer_ms: st.params as f64
                        * (2 + 2 * topo.train.optimizer.state_copies()) as f64
                        / (speed * 1e9)
                        * 1e3,
                }
            })
            .collect();
        let edges = self
            .plan
            .stages
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (a, b) = (&self.places[i], &self.places[i + 1]);
                let bytes = self.costs.cut_bytes[w[0].layers[1]];
                let ms = |from: &Placement, to: &Placement| {
                    if with_links {
                        topo.transfer_ms(from.host, to.host, bytes)
                    } else {
                        0.0
                    }
                };
                EdgeCost {
                    producer: self.chunk_rank[i],
                    consumer: self.chunk_rank[i + 1],
                    act_ms: ms(a, b),
                    grad_ms: ms(b, a),
                }
            })
            .collect();
        SimCosts { chunks, edges }
    }

    /// Per-rank instruction lists (rank r runs the list of the chunk it holds).
    pub fn rank_lists(&self) -> Vec<Vec<crate::schedule::Instr>> {
        let lists = chain_schedule(
            self.topo.train.schedule,
            self.plan.stages.len(),
            self.topo.train.microbatches,
        );
        let mut by_rank = vec![Vec::new(); lists.len()];
        for (chunk, list) in lists.into_iter().enumerate() {
            by_rank[self.chunk_rank[chunk]] = list;
        }
        by_rank
    }

    /// Simulates one step of this plan.
    pub fn simulate(&self, with_links: bool) -> Result<SimReport, SimError> {
        simulate(&self.rank_lists(), &self.sim_costs(with_links))
    }
}
