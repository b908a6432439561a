//! A job plan from the planner's split: chunk k is stage k's layers, rank r runs on the r-th
//! device of the topology and holds chunk r (and r + K, r + 2K, … under interleaved 1F1B, K
//! ranks), edge k joins chunk k to chunk k+1.

use super::{
    ChunkSpec, EdgeSpec, Explain, FORMAT, Job, JobPlan, RankSpec, TopologySource, VERSION,
};
use brigade_partitioner::plan::{Alternative, Plan};
use brigade_partitioner::{ConfigError, LayerGraph, Topology};

/// The job plan for `plan` (made from `topo`, read from `source`), validated and hashed.
pub fn job_from_plan(
    source: TopologySource,
    topo: &Topology,
    plan: &Plan,
    alternatives: &[Alternative],
) -> Result<Job, ConfigError> {
    let graph = LayerGraph::from_model(&topo.model);
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
    let edges = chunks
        .windows(2)
        .enumerate()
        .map(|(i, w)| EdgeSpec {
            id: i,
            from_chunk: i,
            to_chunk: i + 1,
            shape: w[0].output_shape.clone(),
            dtype: topo.train.dtype.name().into(),
            max_bytes: w[0].output_shape.iter().product::<usize>() as u64 * topo.train.dtype.size(),
        })
        .collect();
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
