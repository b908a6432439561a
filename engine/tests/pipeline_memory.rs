//! The executor over the in-memory transport (threads in one process) reproduces the
//! reference: every step's loss and the final parameters, for both schedules.

use brigade_engine::executor::build::executor;
use brigade_engine::executor::driver::{Progress, drive};
use brigade_engine::job::{Job, load_input};
use brigade_engine::reference::train;
use brigade_engine::transport::memory::mesh;
use brigade_stages::params::max_rel_diff;
use burn::prelude::Device;

const STEPS: u64 = 4;

fn job(file: &str, overrides: &[&str]) -> Job {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let path = format!(
        "{}/../topologies/{file}",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    load_input(&path, &overrides, None).unwrap().0
}

fn check(file: &str, overrides: &[&str]) {
    check_job(&job(file, overrides), &format!("{file} {overrides:?}"));
}

fn check_job(job: &Job, what: &str) {
    let mut ref_losses = Vec::new();
    let reference = train(&job.topo, STEPS as usize, &Device::flex(), |m| {
        ref_losses.push(m.loss)
    })
    .unwrap();
    let ranks = job.ranks();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = mesh(ranks)
            .into_iter()
            .enumerate()
            .map(|(k, mut t)| {
                s.spawn(move || {
                    let mut exec = executor(job, k, &Device::flex(), STEPS, false).unwrap();
                    let mut losses = Vec::new();
                    drive(&mut exec, &mut t, |p| {
                        if let Progress::Step { loss, .. } = p {
                            losses.extend(loss);
                        }
                        Ok(())
                    })
                    .unwrap();
                    let params: Vec<_> = exec
                        .stages()
                        .into_iter()
                        .flat_map(|st| st.parameters())
                        .collect();
                    (losses, params)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The rank holding the last chunk reports the losses.
    let last = job.chunk_rank[job.chunks().len() - 1];
    let losses = &results[last].0;
    assert_eq!(losses.len(), STEPS as usize);
    for (step, (a, b)) in losses.iter().zip(&ref_losses).enumerate() {
        assert!(
            ((a - b) / b).abs() <= 1e-5,
            "{what}: step {step} loss {a} vs reference {b}"
        );
    }
    let ref_params = reference.parameters();
    let mut got: Vec<_> = results.iter().flat_map(|r| r.1.clone()).collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len(), ref_params.len());
    for ((i, pa), (j, pb)) in got.iter().zip(&ref_params) {
        assert_eq!(i, j);
        for (a, b) in pa.iter().zip(pb) {
            let d = max_rel_diff(&a.values, &b.values);
            assert!(d <= 1e-5, "{what}: layer {i} {} differs by {d:e}", a.path);
        }
    }
}

#[test]
fn ranks_in_reverse_order_of_their_chunks() {
    // The wiring follows the plan: rank r holds chunk K-1-r.
    let mut plan = job("transformer-lm.toml", &["train.schedule=1f1b"]).plan;
    let k = plan.ranks.len();
    for (r, rank) in plan.ranks.iter_mut().enumerate() {
        rank.chunks = vec![k - 1 - r];
    }
    plan.job_hash = None;
    let reversed = plan.validate("reversed.json").unwrap();
    assert_eq!(reversed.chunk_rank, (0..k).rev().collect::<Vec<_>>());
    check_job(&reversed, "reversed transformer");
}

#[test]
fn mlp_gpipe_and_1f1b() {
    check("quickstart.toml", &["train.schedule=gpipe"]);
    check("quickstart.toml", &["train.schedule=1f1b"]);
}

#[test]
fn recomputation_changes_nothing_but_memory() {
    // Dropout (quickstart) and attention (transformer) recompute identically at backward.
    check(
        "quickstart.toml",
        &["train.schedule=gpipe", "train.recompute=true"],
    );
    check(
        "transformer-lm.toml",
        &["train.schedule=1f1b", "train.recompute=true"],
    );
}

#[test]
fn transformer_4_stages_both_schedules() {
    check("transformer-lm.toml", &["train.schedule=1f1b"]);
    check(
        "transformer-lm.toml",
        &["train.schedule=gpipe", "partition.method=uniform"],
    );
}
