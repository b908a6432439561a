//! What the planner says about a job plan read from a file: its own split and placement with
//! estimated or profiled costs, simulated — never a new split.

use super::Job;
use crate::planning::{Planned, costs_for, finish, live_counts};
use brigade_partitioner::partition::Split;
use brigade_partitioner::plan;
use brigade_partitioner::{ConfigError, Placement};

/// The explanation of a job's own split and placement (a plan file is never re-planned).
pub fn explain(job: &Job, profile: Option<&str>) -> Result<Planned, ConfigError> {
    let topo = job.topo.clone();
    let graph = topo.model.graph().clone();
    let costs = costs_for(&topo, &graph, profile)?;
    let places: Vec<Placement> = job
        .chunk_rank
        .iter()
        .map(|&r| job.places[r].clone())
        .collect();
    let live = job.chunk_live();
    let prob = plan::problem_on(&topo, &costs, &live, &places);
    let counts: Vec<usize> = job
        .chunks()
        .iter()
        .map(|c| c.layers[1] - c.layers[0])
        .collect();
    let mut p = plan::describe(
        &topo,
        &graph,
        &costs,
        &prob,
        &Split::from_counts(&counts),
        &places,
    );
    p.topology = job.file.clone();
    p.method = "plan file".into();
    let alternatives = plan::alternatives(&plan::problem(&topo, &costs, &live_counts(&topo)));
    finish(
        topo,
        graph,
        costs,
        p,
        alternatives,
        places,
        job.chunk_rank.clone(),
    )
}
