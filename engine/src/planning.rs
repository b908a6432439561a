//! From a topology to a plan and its simulated step: what `plan` prints and writes, and what a
//! job plan read from a file is explained with (`crate::job::explain`).

use crate::schedule::{ChunkSlot, EdgeSet, rank_schedule, with_all_reduce};
use crate::schedule::{chain_schedule, peak_live_of};
use crate::sim::{ChunkCost, EdgeCost, SimCosts, SimError, SimReport, simulate};
use brigade_partitioner::model::{Crossing, crossings};
use brigade_partitioner::plan::{self, Alternative, Plan};
use brigade_partitioner::{
    ConfigError, Costs, LayerGraph, Placement, Profile, Topology, WeightGrads,
};

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
    /// The planner turned batched weight gradients off because no split fits memory with them.
    pub batch_weights_off: bool,
    /// With `partition.replicas = "auto"`: every shape weighed, the chosen one marked.
    pub shapes: Vec<ShapeOption>,
}

/// One shape the planner weighed (`partition.replicas` or `threads = "auto"`, [`crate::shape`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShapeOption {
    pub replicas: usize,
    pub stages: usize,
    /// Compute threads per CPU rank, when `partition.threads = "auto"` weighed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Whether the threads' speed-up was measured (a profile with `--threads`) or assumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_measured: Option<bool>,
    /// Simulated step (all replicas together train one batch per step), if the shape fits.
    pub step_ms: Option<f64>,
    /// Why the shape cannot run this model, if it cannot.
    pub why_not: Option<String>,
    pub chosen: bool,
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

/// Micro-batches each chunk of the topology's pipeline keeps alive, counted from the
/// schedule's own instruction lists (chunk c runs on rank c mod stages).
pub fn live_counts(topo: &Topology) -> Vec<u64> {
    let ranks = topo.partition.stages;
    // Each replica runs its share of the micro-batches.
    let lists = chain_schedule(
        topo.train.schedule,
        ranks,
        topo.partition.chunks(),
        topo.train.microbatches / topo.partition.replicas,
    );
    (0..topo.partition.chunks())
        .map(|c| peak_live_of(&lists[c % ranks], c as u32) as u64)
        .collect()
}

/// Plans `topo` (with measured costs from `profile` if given) and simulates its schedule; a
/// schedule that deadlocks or a model that does not fit is reported as bad input.
pub fn make_plan(topo: Topology, profile: Option<&str>) -> Result<Planned, ConfigError> {
    let graph = topo.model.graph().clone();
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
    let places = topo.chunk_placements();
    let chunk_rank = (0..plan.stages.len())
        .map(|c| c % topo.partition.stages)
        .collect();
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
    // A chunk's receives and sends are listed per edge, at most EdgeSet::MAX each way.
    let ranges: Vec<std::ops::Range<usize>> = plan
        .stages
        .iter()
        .map(|s| s.layers[0]..s.layers[1])
        .collect();
    let xs = crossings(&topo.model, &ranges);
    for (c, range) in ranges.iter().enumerate() {
        let ins = xs.iter().filter(|x| x.to == c).count();
        let outs = xs.iter().filter(|x| x.from == c).count();
        if ins.max(outs) > EdgeSet::MAX {
            return Err(ConfigError::invalid(
                &topo.file,
                "partition",
                format!(
                    "stage {c} (layers {:?}) would take {ins} and send {outs} tensors; a stage takes and sends at most {} each",
                    range,
                    EdgeSet::MAX
                ),
                "Use another stage count or split (partition.balance), or fewer skip connections across one stage.",
            ));
        }
    }
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
        batch_weights_off: false,
        shapes: Vec::new(),
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
    /// Under a schedule with a W pass (ZB-H1): the milliseconds of layers `layers` that leave
    /// the backward (B) for W, and what W runs, from their linear products and the run's
    /// weight-gradient strategy (`brigade_layers::strategy`); (0, 0) otherwise.
    fn weight_pass_ms(&self, layers: std::ops::Range<usize>, speed_gflops: f64) -> (f64, f64) {
        if self.topo.train.weight_grads() != WeightGrads::PerMicrobatch {
            return (0.0, 0.0);
        }
        self.products_ms(layers, speed_gflops)
    }

    /// The milliseconds per micro-batch of layers `layers`' linear products that a split
    /// backward leaves for W, and what the weight products then cost, whatever the run's
    /// strategy.
    pub(crate) fn products_ms(
        &self,
        layers: std::ops::Range<usize>,
        speed_gflops: f64,
    ) -> (f64, f64) {
        let weights = self.topo.train.weight_grads();
        let layer_ms = |i: usize| {
            // The products' share of the layer's (estimated or profiled) forward time.
            let node = self.graph.layer(i);
            let per_flop = self.costs.forward_gflop[i] / speed_gflops * 1e3
                / node.cost.forward_flops.max(f64::MIN_POSITIVE);
            let (moved, w) = node
                .kind
                .products(&node.input_shape)
                .iter()
                .map(|p| weights.moved_flops(p))
                .fold((0.0, 0.0), |(a, b), (m, w)| (a + m, b + w));
            (moved * per_flop, w * per_flop)
        };
        layers
            .map(layer_ms)
            .fold((0.0, 0.0), |(a, b), (m, w)| (a + m, b + w))
    }

    /// What the simulator charges for this plan; `with_links = false` makes communication
    /// free (the ideal a pipeline is measured against).
    pub fn sim_costs(&self, with_links: bool) -> SimCosts {
        let topo = &self.topo;
        let chunks = self
            .plan
            .stages
            .iter()
            .zip(&self.places)
            .enumerate()
            .map(|(c, (st, place))| {
                // Products run on the rank's threads; the optimizer's element-wise update on one.
                let speed = topo.device(place).speed_gflops;
                let products = brigade_partitioner::plan::rank_speed(topo, &self.costs, place);
                let (moved_ms, weight_ms) =
                    self.weight_pass_ms(st.layers[0]..st.layers[1], products);
                ChunkCost {
                    forward_ms: st.forward_ms,
                    backward_ms: st.backward_ms,
                    input_backward_ms: (st.backward_ms - moved_ms).max(0.0),
                    weight_ms,
                    // A few FLOPs per parameter and optimizer state copy.
                    optimizer_ms: st.params as f64
                        * (2 + 2 * topo.train.optimizer.state_copies()) as f64
                        / (speed * 1e9)
                        * 1e3,
                    allreduce_ms: if with_links {
                        self.reduce_cost(c).exposed_ms
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        let edges = self
            .crossings()
            .into_iter()
            .map(|x| {
                let (i, j) = (x.from, x.to);
                let (a, b) = (&self.places[i], &self.places[j]);
                let bytes = self.edge_bytes(&x);
                // Between a rank's own chunks a tensor stays in the process.
                let local = self.chunk_rank[i] == self.chunk_rank[j];
                let ms = |from: &Placement, to: &Placement| {
                    if with_links && !local {
                        topo.transfer_ms(from.host, to.host, bytes)
                    } else {
                        0.0
                    }
                };
                EdgeCost {
                    producer: self.chunk_rank[i],
                    consumer: self.chunk_rank[j],
                    act_ms: ms(a, b),
                    grad_ms: ms(b, a),
                }
            })
            .collect();
        SimCosts { chunks, edges }
    }

    /// Per-rank instruction lists of one replica (rank r runs the chunks it holds, in chunk
    /// order, on its replica's share of the micro-batches).
    pub fn rank_lists(&self) -> Vec<Vec<crate::schedule::Instr>> {
        let ranks = self.chunk_rank.iter().max().map_or(0, |m| m + 1);
        let crossings = self.crossings();
        let depth = self.plan.stages.len();
        let slots = |r: usize| -> Vec<ChunkSlot> {
            let ids = |f: &dyn Fn(&Crossing) -> bool| -> Vec<u32> {
                (0..crossings.len() as u32)
                    .filter(|&e| f(&crossings[e as usize]))
                    .collect()
            };
            (0..depth)
                .filter(|&c| self.chunk_rank[c] == r)
                .map(|c| ChunkSlot {
                    chunk: c as u32,
                    position: c,
                    depth,
                    input: EdgeSet::of(&ids(&|x| x.to == c)),
                    output: EdgeSet::of(&ids(&|x| x.from == c)),
                })
                .collect()
        };
        (0..ranks)
            .map(|r| {
                with_all_reduce(
                    rank_schedule(
                        self.topo.train.schedule,
                        &slots(r),
                        ranks,
                        self.topo.train.microbatches / self.topo.partition.replicas,
                    ),
                    self.topo.partition.replicas,
                )
            })
            .collect()
    }

    /// The tensors crossing between this plan's chunks (the job plan's edges, in their order).
    pub fn crossings(&self) -> Vec<Crossing> {
        let ranges: Vec<std::ops::Range<usize>> = self
            .plan
            .stages
            .iter()
            .map(|s| s.layers[0]..s.layers[1])
            .collect();
        crossings(&self.topo.model, &ranges)
    }

    /// Bytes one micro-batch's tensor on crossing `x` takes.
    pub fn edge_bytes(&self, x: &Crossing) -> u64 {
        match &self.costs.graph {
            Some(g) => g.bytes[x.tensor],
            None => self.costs.cut_bytes[x.tensor + 1],
        }
    }

    /// Simulates one step of this plan.
    pub fn simulate(&self, with_links: bool) -> Result<SimReport, SimError> {
        simulate(&self.rank_lists(), &self.sim_costs(with_links))
    }
}
