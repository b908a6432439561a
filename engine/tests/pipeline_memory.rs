//! The executor over the in-memory transport (threads in one process) reproduces the
//! reference: every step's loss and the final parameters, for both schedules.

use brigade_engine::executor::build::executor;
use brigade_engine::executor::driver::drive;
use brigade_engine::planning::make_plan;
use brigade_engine::transport::memory::chain;
use brigade_partitioner::load;
use brigade_stages::params::max_rel_diff;
use brigade_stages::reference::train_reference;
use burn::prelude::Device;

const STEPS: u64 = 4;

fn check(file: &str, overrides: &[&str]) {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let topo = load(
        &format!(
            "{}/../topologies/{file}",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        ),
        &overrides,
    )
    .unwrap();
    let mut ref_losses = Vec::new();
    let reference = train_reference(&topo, STEPS as usize, &Device::flex(), |m| {
        ref_losses.push(m.loss)
    })
    .unwrap();
    let planned = make_plan(topo.clone(), None).unwrap();
    let k_total = planned.plan.stages.len();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = chain(k_total)
            .into_iter()
            .enumerate()
            .map(|(k, mut t)| {
                let (topo, plan) = (&planned.topo, &planned.plan);
                s.spawn(move || {
                    let mut exec = executor(topo, plan, k, &Device::flex(), STEPS, false);
                    let mut losses = Vec::new();
                    drive(&mut exec, &mut t, |_, l| losses.extend(l)).unwrap();
                    (losses, exec.stage().parameters())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let losses = &results[k_total - 1].0;
    assert_eq!(losses.len(), STEPS as usize);
    for (step, (a, b)) in losses.iter().zip(&ref_losses).enumerate() {
        assert!(
            ((a - b) / b).abs() <= 1e-5,
            "{file} {overrides:?}: step {step} loss {a} vs reference {b}"
        );
    }
    let ref_params = reference.parameters();
    let got: Vec<_> = results.iter().flat_map(|r| r.1.clone()).collect();
    assert_eq!(got.len(), ref_params.len());
    for ((i, pa), (j, pb)) in got.iter().zip(&ref_params) {
        assert_eq!(i, j);
        for (a, b) in pa.iter().zip(pb) {
            let d = max_rel_diff(&a.values, &b.values);
            assert!(
                d <= 1e-5,
                "{file} {overrides:?}: layer {i} {} differs by {d:e}",
                a.path
            );
        }
    }
}

#[test]
fn mlp_gpipe_and_1f1b() {
    check("quickstart.toml", &["train.schedule=gpipe"]);
    check("quickstart.toml", &["train.schedule=1f1b"]);
}

#[test]
fn transformer_4_stages_both_schedules() {
    check("transformer-lm.toml", &["train.schedule=1f1b"]);
    check(
        "transformer-lm.toml",
        &["train.schedule=gpipe", "partition.method=uniform"],
    );
}
