//! `brigade plan` as a user runs it: exit codes, JSON shape, error text.

use std::process::Command;

fn brigade(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(args)
        .current_dir(format!(
            "{}/..",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        ))
        .output()
        .expect("run brigade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_json_has_the_documented_fields() {
    let (code, out, err) = brigade(&["plan", "topologies/quickstart.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["stage"], 0);
    assert_eq!(stages[0]["host"], "local");
    assert_eq!(stages[0]["device"], "cpu");
    assert_eq!(stages[0]["layers"][0], 0);
    assert_eq!(stages[1]["layers"][1], 6);
    for key in ["compute_ms", "memory_bytes", "send_bytes"] {
        assert!(stages[0][key].is_number(), "missing {key}");
    }
    for key in ["bottleneck_ms", "step_ms", "bubble_fraction"] {
        assert!(v[key].is_number(), "missing {key}");
    }
    // GPipe's bubble with K = 2 stages and M = 8 micro-batches: (K-1)/(M+K-1) = 1/9.
    assert!((v["bubble_fraction"].as_f64().unwrap() - 1.0 / 9.0).abs() < 1e-12);
}

#[test]
fn plan_text_explains_the_plan_and_compares_methods() {
    let (code, out, _) = brigade(&[
        "plan",
        "topologies/transformer-lm.toml",
        "--set",
        "partition.method=uniform",
    ]);
    assert_eq!(code, 0);
    for needle in [
        "bottleneck",
        "bubble",
        "speed-up",
        "auto",
        "uniform",
        "parameters",
        "transformer_block",
    ] {
        assert!(out.contains(needle), "plan output lacks {needle}:\n{out}");
    }
}

#[test]
fn bad_topology_exits_2_with_the_key() {
    let (code, _, err) = brigade(&[
        "plan",
        "topologies/quickstart.toml",
        "--set",
        "train.microbatches=0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("topologies/quickstart.toml") && err.contains("train.microbatches"),
        "{err}"
    );
    let (code, _, err) = brigade(&["plan", "does-not-exist.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does-not-exist.toml"), "{err}");
}

#[test]
fn profile_replaces_estimates() {
    let dir = std::env::temp_dir().join(format!("brigade-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("p.json");
    // Layer 5 (the last linear) is measured as very slow: auto must give it a stage of its own.
    let layers: Vec<String> = (0..6)
        .map(|i| {
            let ms = if i == 5 { 50.0 } else { 1.0 };
            format!(r#"{{"name": "l{i}", "forward_ms": {ms}, "backward_ms": {ms}, "activation_bytes": 4096, "param_bytes": 1000}}"#)
        })
        .collect();
    std::fs::write(&profile, format!(r#"{{"layers": [{}]}}"#, layers.join(","))).unwrap();
    let (code, out, err) = brigade(&[
        "plan",
        "topologies/quickstart.toml",
        "--json",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stages"][1]["layers"], serde_json::json!([5, 6]));
    assert_eq!(v["measured_costs"], true);
    std::fs::write(&profile, "{\"layers\": [}").unwrap();
    let (code, _, err) = brigade(&[
        "plan",
        "topologies/quickstart.toml",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("p.json:1:"), "{err}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn train_refuses_gpu_devices_in_a_cpu_build_before_starting_anything() {
    let (code, _, err) = brigade(&["train", "topologies/two-hosts.toml", "--steps", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hosts[0].devices[0]") && err.contains("--features cuda"),
        "{err}"
    );
}

/// The benchmark MLP with 36 MiB per device: without recomputation each stage needs ~40 MiB,
/// with it ~34 MiB, so the planner turns recomputation on and says so.
/// `train_extra` is written at the top of [train].
fn tight_memory_topology(name: &str, train_extra: &str) -> std::path::PathBuf {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(format!("{root}/topologies/mlp-8x1024.toml")).unwrap();
    let old = "devices = [\"cpu\", \"cpu\"]";
    assert!(text.contains(old) && text.contains("[train]\n"));
    let text = text
        .replace(old, &format!("{old}\nmemory = \"36MiB\""))
        .replace("[train]\n", &format!("[train]\n{train_extra}\n"));
    let dir = std::env::temp_dir().join(format!("brigade-plan-mem-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tight.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn planner_turns_recompute_on_when_memory_forces_it_and_records_it() {
    // A comment naming recompute is not a choice.
    let topo = tight_memory_topology("auto", "# recompute: left to the planner");
    let job = topo.with_file_name("job.json");
    let (topo_s, job_s) = (topo.to_str().unwrap(), job.to_str().unwrap());
    let (code, out, err) = brigade(&["plan", topo_s, "--out", job_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("turned on by the planner"), "{out}");
    // The schedule table shows why: plain GPipe does not fit, 1F1B (fewer live micro-batches)
    // and recomputation do.
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{out}"))
            .to_string()
    };
    assert!(row("gpipe  ").contains("does not fit memory"), "{out}");
    for name in ["gpipe + recompute", "1f1b  ", "1f1b + recompute"] {
        assert!(row(name).contains("bubble"), "{out}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&job).unwrap()).unwrap();
    // Recorded among the plan's overrides: on the first chunks only, or on all of them.
    let overrides = v["topology"]["overrides"].to_string();
    assert!(overrides.contains("train.recompute="), "{overrides}");

    // Under 1F1B with a little less memory, only the first chunk (which keeps the most
    // micro-batches alive) needs to recompute, and only it does.
    let tighter = topo.with_file_name("tighter.toml");
    std::fs::write(
        &tighter,
        std::fs::read_to_string(&topo)
            .unwrap()
            .replace("memory = \"36MiB\"", "memory = \"33.6MiB\""),
    )
    .unwrap();
    let (code, out, err) = brigade(&[
        "plan",
        tighter.to_str().unwrap(),
        "--set",
        "train.schedule=1f1b",
        "--out",
        job_s,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("turned on by the planner on chunks [0]"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&job).unwrap()).unwrap();
    let overrides = v["topology"]["overrides"].to_string();
    assert!(overrides.contains("train.recompute=[0]"), "{overrides}");

    // Refusing recomputation leaves no split, and the error names the key and the way out.
    let (code, _, err) = brigade(&["plan", topo_s, "--set", "train.recompute=false"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("partition") && err.contains("train.recompute"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(topo.parent().unwrap());

    // So does writing it in the file.
    let refused = tight_memory_topology("refused", "recompute = false");
    let (code, _, err) = brigade(&["plan", refused.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.recompute"), "{err}");
    let _ = std::fs::remove_dir_all(refused.parent().unwrap());
}

#[test]
fn plan_into_a_closed_pipe_ends_quietly() {
    // `brigade plan … | head -1`: the reader goes away early; no panic message.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(["plan", "topologies/transformer-lm.toml"])
        .current_dir(format!(
            "{}/..",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
