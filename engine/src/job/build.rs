//! A job plan from the planner's split: chunk k is stage k's layers, rank r runs on the r-th
//! device of the topology and holds chunk r (and r + K, r + 2K, … under interleaved 1F1B, K
//! ranks), edge k joins chunk k to chunk k+1.

use super::{
    ChunkSpec, EdgeSpec, Explain, FORMAT, Job, JobPlan, RankSpec, TopologySource, VERSION,
};
use brigade_partitioner::model::crossings;
use brigade_partitioner::plan::{Alternative, Plan};
use brigade_partitioner::{ConfigError, Topology};

/// The plan's edges for `chunks` of `topo`'s model: one per tensor crossing from the chunk making
/// it to a chunk taking it ([`brigade_partitioner::model::crossings`]); for a chain, edge i
/// joins chunk i to chunk i + 1 and names no layer.
pub fn edges_of(topo: &Topology, chunks: &[ChunkSpec]) -> Vec<EdgeSpec> {
    let graph = topo.model.graph();
    let mbs = topo.train.microbatch_size();
    let ranges: Vec<std::ops::Range<usize>> =
        chunks.iter().map(|c| c.layers[0]..c.layers[1]).collect();
    let chain = topo.model.is_chain();
    crossings(&topo.model, &ranges)
        .into_iter()
        .enumerate()
        .map(|(id, c)| {
            let shape: Vec<usize> = std::iter::once(mbs)
                .chain(graph.layer(c.tensor).output_shape.iter().copied())
                .collect();
            EdgeSpec {
                id,
                from_chunk: c.from,
                to_chunk: c.to,
                max_bytes: shape.iter().product::<usize>() as u64 * topo.train.dtype.size(),
                shape,
                dtype: topo.train.dtype.name().into(),
                layer: (!chain).then_some(c.tensor),
            }
        })
        .collect()
}

/// The job plan for `plan` (made from `topo`, read from `source`), validated and hashed.
pub fn job_from_plan(
    source: TopologySource,
    topo: &Topology,
    plan: &Plan,
    alternatives: &[Alternative],
) -> Result<Job, ConfigError> {
    let graph = topo.model.graph();
    let mbs = topo.train.microbatch_size();
    let with_batch =
        |s: &[usize]| -> Vec<usize> { std::iter::once(mbs).chain(s.iter().copied()).collect() };
    let chunks: Vec<ChunkSpec> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(k, st)| {
            let [a, b] = st.layers;
            ChunkSpec {
                id: k,
                layers: [a, b],
                input_shape: with_batch(&graph.layer(a).input_shape),
                output_shape: with_batch(&graph.layer(b - 1).output_shape),
            }
        })
        .collect();
    let places = topo.all_placements();
    let k_ranks = topo.partition.stages.min(chunks.len());
    // Replica d's ranks are d·K .. (d+1)·K, on the next K devices in host order.
    let ranks = (0..topo.partition.replicas)
        .flat_map(|d| (0..k_ranks).map(move |k| (d, k)))
        .map(|(d, k)| {
            let r = d * k_ranks + k;
            let p = &places[r];
            RankSpec {
                rank: r,
                host: topo.hosts[p.host].name.clone(),
                device: p.device,
                device_kind: topo.device(p).kind.to_string(),
                chunks: (k..chunks.len()).step_by(k_ranks).collect(),
                replica: d,
            }
        })
        .collect();
    let edges = edges_of(topo, &chunks);
    let file = source.file.clone();
    let raw = JobPlan {
        format: FORMAT.into(),
        version: VERSION,
        brigade_version: env!("CARGO_PKG_VERSION").into(),
        job_hash: None,
        topology: source,
        schedule: topo.train.schedule.name().into(),
        microbatches: topo.train.microbatches,
        chunks,
        ranks,
        edges,
        // Reading the footers here checks the data before any stage starts.
        data: brigade_stages::data::parquet::inspect(topo)?,
        explain: Some(
            serde_json::to_value(Explain {
                plan: plan.clone(),
                alternatives: alternatives.to_vec(),
            })
            .expect("a plan always serialises"),
        ),
    };
    let mut job = raw.validate(&file)?;
    // Messages name the file the user gave.
    job.topo.file = topo.file.clone();
    job.plan.job_hash = Some(job.hash_hex());
    Ok(job)
}
