//! A plan: which layers run where, what each stage costs, and how the pipeline should perform.

use crate::cost::Costs;
use crate::graph::LayerGraph;
use crate::layers::WeightGrads;
use crate::partition::{self, DeferredW, PartitionError, Problem, Split, StageSlot};
use crate::topology::{Method, Placement, Topology};
use serde::{Deserialize, Serialize};

/// One stage of a plan. Times are per micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStage {
    pub stage: usize,
    pub host: String,
    pub device: String,
    /// `[start, end_exclusive]` layer indices.
    pub layers: [usize; 2],
    pub kinds: Vec<String>,
    pub params: u64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// forward + backward.
    pub compute_ms: f64,
    /// Time to send this stage's outgoing activations and gradients.
    pub send_ms: f64,
    pub memory_bytes: u64,
    /// Activation bytes sent to the next stage per micro-batch.
    pub send_bytes: u64,
    /// Compute threads the rank is planned with (one unless the topology says more).
    #[serde(default = "one_thread")]
    pub threads: usize,
}

fn one_thread() -> usize {
    1
}

/// A complete plan (the `--json` output of `brigade plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub topology: String,
    pub method: String,
    pub schedule: String,
    pub microbatches: usize,
    pub measured_costs: bool,
    pub stages: Vec<PlanStage>,
    /// The slowest stage's compute + send per micro-batch.
    pub bottleneck_ms: f64,
    /// Predicted time of one training step.
    pub step_ms: f64,
    /// Fraction of the step a stage idles because of the schedule's fill and drain.
    pub bubble_fraction: f64,
    /// One step on the first device alone, all micro-batches.
    pub single_device_ms: f64,
    pub speedup: f64,
}

/// Cost of the same model under another partitioning method, for comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub method: String,
    pub layers_per_stage: Vec<usize>,
    pub bottleneck_ms: f64,
    pub fits_memory: bool,
}

/// The partitioning problem a topology poses with these costs. `live[k]` is how many
/// micro-batches stage k keeps alive at its peak: the schedule's own count (the engine derives
/// it from the instruction lists, so there is one formula, not two).
pub fn problem(topo: &Topology, costs: &Costs, live: &[u64]) -> Problem {
    problem_on(topo, costs, live, &topo.chunk_placements())
}

/// Per layer, what batched weight gradients keep of one micro-batch until the step's end: each
/// linear product's input and output gradient.
fn deferred_bytes(topo: &Topology) -> Vec<u64> {
    let graph = topo.model.graph();
    let mbs = topo.train.microbatch_size() as u64;
    let weights = topo.train.weight_grads();
    graph
        .layers()
        .map(|l| {
            let kept = l.kind.products(&l.input_shape).iter().fold(0u64, |acc, p| {
                acc.saturating_add(weights.kept_bytes(p, topo.train.dtype.size()))
            });
            kept.saturating_mul(mbs)
        })
        .collect()
}

/// [`problem`] with stage k on `places[k]` (a job plan may place its chunks in another order
/// than the topology's host and device order).
pub fn problem_on(topo: &Topology, costs: &Costs, live: &[u64], places: &[Placement]) -> Problem {
    let k_total = places.len();
    let per_byte = |a: &Placement, b: &Placement| {
        let (gbps, lat) = topo.link(a.host, b.host);
        (8.0 / (gbps * 1e9) * 1e3, lat)
    };
    // A replica reads its chunk's gradients out into f32 buckets and sums them there, every
    // bucket in flight until the optimizer step (decision 0021): a copy of the chunk's
    // parameters beside burn's gradients, plus the segments on the wire (1/D of a bucket each
    // way), counted as a second copy (exact for two replicas, a bound for more). Measured on
    // mlp-8x1024, 2 replicas × 1 stage: +70–80 MiB of peak RSS over one replica of the same
    // micro-batch, 2.2 copies of its 32 MiB of parameters (docs/replicas.md).
    let reduce_copies = if topo.partition.replicas > 1 { 2 } else { 0 };
    let slots = places
        .iter()
        .enumerate()
        .map(|(k, pl)| {
            let dev = topo.device(pl);
            // A rank holding several chunks (interleaved 1F1B) splits its device's memory.
            let sharing = places.iter().filter(|p| *p == pl).count() as u64;
            StageSlot {
                speed_gflops: rank_speed(topo, costs, pl),
                memory_bytes: dev.memory_bytes.map(|m| m / sharing),
                live_microbatches: live
                    .get(k)
                    .copied()
                    .unwrap_or(topo.train.microbatches as u64),
                param_factor: 1 + topo.train.optimizer.state_copies() + reduce_copies,
                send_next: if k + 1 < k_total {
                    per_byte(pl, &places[k + 1])
                } else {
                    (0.0, 0.0)
                },
                send_prev: if k > 0 {
                    per_byte(pl, &places[k - 1])
                } else {
                    (0.0, 0.0)
                },
                recompute: topo.train.recomputes(k),
            }
        })
        .collect();
    Problem {
        work: costs
            .forward_gflop
            .iter()
            .zip(&costs.backward_gflop)
            .map(|(f, b)| f + b)
            .collect(),
        // Recomputation runs a chunk's forward a second time, at backward.
        recompute_work: costs.forward_gflop.clone(),
        param_bytes: costs.param_bytes.clone(),
        saved_bytes: costs.saved_bytes.clone(),
        cut_bytes: costs.cut_bytes.clone(),
        graph: costs.graph.clone(),
        deferred: (topo.train.weight_grads() == WeightGrads::PerStep).then(|| DeferredW {
            bytes: deferred_bytes(topo),
            microbatches: (topo.train.microbatches / topo.partition.replicas.max(1)) as u64,
        }),
        slots,
    }
}

/// The split a method gives.
pub fn split(method: &Method, problem: &Problem) -> Result<Split, PartitionError> {
    let k = problem.slots.len();
    match method {
        Method::Auto => partition::auto(problem),
        Method::Uniform => Ok(partition::uniform(problem.layers(), k)),
        Method::Parameters => partition::parameters(&problem.param_bytes, k),
        Method::Manual(counts) => Ok(Split::from_counts(counts)),
    }
}

/// Plans `topo` with `costs` using the topology's method (`live`: see [`problem`]).
pub fn plan(
    topo: &Topology,
    graph: &LayerGraph,
    costs: &Costs,
    live: &[u64],
) -> Result<Plan, PartitionError> {
    let prob = problem(topo, costs, live);
    let split = split(&topo.partition.method, &prob)?;
    Ok(describe(
        topo,
        graph,
        costs,
        &prob,
        &split,
        &topo.chunk_placements(),
    ))
}

/// The plan for a given split, stage k on `places[k]`.
pub fn describe(
    topo: &Topology,
    graph: &LayerGraph,
    costs: &Costs,
    prob: &Problem,
    split: &Split,
    places: &[Placement],
) -> Plan {
    let stages: Vec<PlanStage> = (0..split.stages())
        .map(|k| {
            let r = split.range(k);
            let speed = rank_speed(topo, costs, &places[k]);
            let ms = |w: &[f64]| w[r.clone()].iter().sum::<f64>() / speed * 1e3;
            let forward_ms = ms(&costs.forward_gflop);
            // Recomputation's second forward is part of the backward.
            let backward_ms = ms(&costs.backward_gflop)
                + if prob.slots[k].recompute {
                    forward_ms
                } else {
                    0.0
                };
            PlanStage {
                stage: k,
                host: topo.hosts[places[k].host].name.clone(),
                device: topo.device(&places[k]).kind.to_string(),
                layers: [r.start, r.end],
                kinds: r
                    .clone()
                    .map(|i| graph.layer(i).kind.name().to_string())
                    .collect(),
                params: r.clone().map(|i| graph.layer(i).cost.params).sum(),
                forward_ms,
                backward_ms,
                compute_ms: forward_ms + backward_ms,
                send_ms: prob.send_ms(k, r.start, r.end),
                memory_bytes: prob.memory_bytes(k, r.start, r.end),
                send_bytes: prob.out_bytes(r.start, r.end),
                threads: topo.threads(&places[k]),
            }
        })
        .collect();
    let m = topo.train.microbatches;
    let k = stages.len();
    let bottleneck_ms = prob.bottleneck_ms(split);
    // GPipe and 1F1B (with a flush) spend (K-1) slots filling and draining around M
    // micro-batches; interleaving v chunks per rank makes those slots 1/v as long (K ranks,
    // K·v chunks). The engine's simulator refines this with per-stage costs.
    let v = topo.partition.chunks_per_rank.max(1);
    let ranks = k.div_ceil(v);
    let step_ms = (v * m + ranks - 1) as f64 * bottleneck_ms;
    let bubble_fraction = (ranks - 1) as f64 / (v * m + ranks - 1) as f64;
    let first = topo.hosts[0].devices[0].speed_gflops;
    let total_work: f64 = costs
        .forward_gflop
        .iter()
        .chain(&costs.backward_gflop)
        .sum();
    let single_device_ms = m as f64 * total_work / first * 1e3;
    Plan {
        topology: topo.file.clone(),
        method: topo.partition.method.name().to_string(),
        schedule: topo.train.schedule.name().to_string(),
        microbatches: m,
        measured_costs: costs.measured,
        stages,
        bottleneck_ms,
        step_ms,
        bubble_fraction,
        single_device_ms,
        speedup: if step_ms > 0.0 {
            single_device_ms / step_ms
        } else {
            1.0
        },
    }
}

/// How `auto`, `uniform` and `parameters` compare on this problem.
pub fn alternatives(prob: &Problem) -> Vec<Alternative> {
    [Method::Auto, Method::Uniform, Method::Parameters]
        .iter()
        .filter_map(|m| {
            let s = split(m, prob).ok()?;
            Some(Alternative {
                method: m.name().to_string(),
                layers_per_stage: s.counts(),
                bottleneck_ms: prob.bottleneck_ms(&s),
                fits_memory: prob.fits(&s),
            })
        })
        .collect()
}

/// The GFLOP/s of the rank at `p`: its device's speed on one thread, times the speed-up of
/// the threads it computes on (measured by the profile, else assumed linear).
pub fn rank_speed(topo: &Topology, costs: &Costs, p: &Placement) -> f64 {
    topo.device(p).speed_gflops * costs.speedup(topo.threads(p)).0
}
