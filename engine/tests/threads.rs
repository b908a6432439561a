//! Threads per rank (decision 0019): a rank computing on two threads computes the same bits
//! as on one — `reference --threads 2` equals `reference`, and a pipeline of two-thread ranks
//! trains what the reference trains — each rank says what it chose, and the planner weighs
//! threads against stages within a host's cores.

mod common;

use common::*;

const MLP: &str = "topologies/mlp-8x1024.toml";

#[test]
fn two_threads_compute_what_one_computes() {
    let dir = tmp("threads");
    let clip = ["train.clip_grad_norm=1.0".to_string()];
    let one = run_with_outputs(&dir, "ref", "reference", MLP, "3", &clip);
    // mlp-8x1024's products (32 × 1024 × 1024) are large enough for flex to split them.
    let mut two_set = clip.to_vec();
    two_set.push("partition.threads=2".into());
    let two = run_with_outputs(&dir, "ref2", "reference", MLP, "3", &two_set);
    assert_eq!(two.0, one.0, "reference on 2 threads: losses");
    assert_eq!(two.1, one.1, "reference on 2 threads: parameters");
    // Two ranks of two threads each ("cpu:2"), clipping across them.
    let mut set = clip.to_vec();
    set.push(r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu:2","cpu:2"]}]"#.into());
    let (m, p) = (dir.join("pipe.jsonl"), dir.join("pipe-params"));
    let mut args = vec![
        "train",
        MLP,
        "--steps",
        "3",
        "--metrics",
        m.to_str().unwrap(),
    ];
    args.extend(["--save-params", p.to_str().unwrap()]);
    for s in &set {
        args.extend(["--set", s.as_str()]);
    }
    let out = run(&args);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for k in 0..2 {
        let said = format!("stage {k}: 2 compute thread(s) (the plan)");
        assert!(err.contains(&said), "no \"{said}\" in:\n{err}");
    }
    let params = brigade_engine::params_io::load_dir(&p).unwrap();
    assert_same("2 × cpu:2", (&losses(&m), &params), (&one.0, &one.1));
}

#[test]
fn reference_says_its_threads() {
    let out = run(&["reference", MLP, "--steps", "1", "--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on one cpu (2 threads)"), "{text}");
}

/// `brigade plan` of the MLP as one stage on a host of 2 cores with threads = "auto".
fn plan_auto_threads(extra: &[&str]) -> String {
    let host = r#"hosts=[{name="local",address="127.0.0.1",threads=2,devices=["cpu","cpu"]}]"#;
    let mut args = vec![
        "plan",
        MLP,
        "--set",
        host,
        "--set",
        "partition.threads=\"auto\"",
        "--set",
        "partition.stages=1",
    ];
    args.extend(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_planner_weighs_threads_against_stages() {
    // A host of 2 cores: 1 stage × 1 or 2 threads, 2 stages × 1 thread.
    let text = plan_auto_threads(&[]);
    for shape in ["1 × 1 × 1 thr", "1 × 1 × 2 thr"] {
        assert!(text.contains(shape), "no {shape} in:\n{text}");
    }
    assert!(
        !text.contains("× 3 thr"),
        "more threads than cores:\n{text}"
    );
    assert!(text.contains("assumed linear"), "{text}");
    // Linear scaling assumed: one stage on both cores has no bubble and wins.
    assert!(
        text.contains("chose 1 replica(s) of a 1-stage pipeline, 2 compute thread(s) per rank"),
        "{text}"
    );
    // One stage keeps the topology's micro-batches, and the plan says what they cost.
    assert!(
        text.contains("one stage: its 8 micro-batches only make its products smaller"),
        "{text}"
    );
    // A profile that measured no speed-up makes the extra thread worthless: one thread, and
    // the plan says the speed-up was measured.
    let dir = tmp("threads-plan");
    let prof = dir.join("flat.json");
    let layer = |name: &str| {
        format!(
            r#"{{"name":"{name}","forward_ms":1.0,"backward_ms":2.0,"activation_bytes":131072,"param_bytes":4,"at_threads":[{{"threads":2,"forward_ms":1.0,"backward_ms":2.0}}]}}"#
        )
    };
    let layers: Vec<String> = (0..17).map(|i| layer(&format!("l{i}"))).collect();
    std::fs::write(&prof, format!(r#"{{"layers":[{}]}}"#, layers.join(","))).unwrap();
    let text = plan_auto_threads(&["--profile", prof.to_str().unwrap()]);
    assert!(
        text.contains("1-stage pipeline, 1 compute thread(s)"),
        "{text}"
    );
    assert!(!text.contains("assumed linear"), "{text}");
}
