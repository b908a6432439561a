//! `brigade reference` and `brigade profile` as a user runs them.

use std::process::Command;

fn brigade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_brigade"))
        .args(args)
        .current_dir(format!(
            "{}/..",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        ))
        .output()
        .expect("run brigade")
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("brigade-cli-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn reference_is_deterministic_and_learns() {
    let (a, b) = (tmp("a.jsonl"), tmp("b.jsonl"));
    for m in [&a, &b] {
        let out = brigade(&[
            "reference",
            "topologies/quickstart.toml",
            "--steps",
            "30",
            "--metrics",
            m,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |p: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("val_loss").is_none())
            .collect()
    };
    let (ra, rb) = (read(&a), read(&b));
    assert_eq!(ra.len(), 30);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(
            x["loss"], y["loss"],
            "a second run must print identical losses"
        );
        for key in ["step", "loss", "step_ms", "samples_per_sec"] {
            assert!(x[key].is_number(), "metrics line lacks {key}: {x}");
        }
    }
    assert_eq!(ra[0]["step"], 1);
    let mean = |xs: &[serde_json::Value]| {
        xs.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / xs.len() as f64
    };
    let (first, last) = (mean(&ra[..5]), mean(&ra[25..]));
    assert!(
        last < 0.8 * first,
        "loss should fall clearly over 30 steps: first 5 mean {first}, last 5 mean {last}"
    );
}

#[test]
fn profile_writes_what_plan_reads() {
    let p = tmp("profile.json");
    let out = brigade(&[
        "profile",
        "topologies/cnn.toml",
        "--out",
        &p,
        "--repeats",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 10);
    assert_eq!(layers[0]["name"], "conv2d0");
    assert!(layers[0]["forward_ms"].as_f64().unwrap() > 0.0);
    // conv2d 3→8, 3×3 with bias: (8·3·9 + 8) f32 parameters.
    assert_eq!(layers[0]["param_bytes"], 224 * 4);
    // One micro-batch of 8 samples of [8, 16, 16] f32.
    assert_eq!(layers[0]["activation_bytes"], 8 * 8 * 16 * 16 * 4);
    let out = brigade(&["plan", "topologies/cnn.toml", "--profile", &p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("profiled costs"));
}

#[test]
fn devices_and_training_dtypes_are_checked_before_training() {
    // --device chooses the reference's device; a CPU build names the feature it lacks.
    let out = brigade(&[
        "reference",
        "topologies/quickstart.toml",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = brigade(&[
        "reference",
        "topologies/quickstart.toml",
        "--device",
        "gpu0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("\"gpu0\" is not a device"),
        "{}",
        err(&out)
    );
    if !cfg!(feature = "cuda") {
        let out = brigade(&[
            "reference",
            "topologies/quickstart.toml",
            "--device",
            "cuda:0",
        ]);
        assert_ne!(out.status.code(), Some(0));
        assert!(err(&out).contains("--features cuda"), "{}", err(&out));
    }
    // Half precision is for GPUs: CPU stages compute in f32, and every command says so.
    let bf16 = "train.dtype=\"bf16\"";
    for cmd in ["reference", "train"] {
        let out = brigade(&[cmd, "topologies/quickstart.toml", "--set", bf16]);
        assert_ne!(out.status.code(), Some(0), "{cmd} {}", err(&out));
        assert!(
            err(&out).contains("train.dtype = \"bf16\" needs a CUDA device"),
            "{cmd}: {}",
            err(&out)
        );
    }
    let out = brigade(&[
        "train",
        "topologies/quickstart.toml",
        "--set",
        "train.dtype=\"f8\"",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("train.dtype"), "{}", err(&out));
    // Interleaved 1F1B is refused on GPUs until it trains reproducibly there (docs/gpu.md),
    // before the build's missing CUDA is even looked at.
    let gpu = tmp("gpu.toml");
    std::fs::write(
        &gpu,
        std::fs::read_to_string(format!(
            "{}/../topologies/quickstart.toml",
            std::env::var("CARGO_MANIFEST_DIR").unwrap()
        ))
        .unwrap()
        .replace("\"cpu\"", "\"cuda:0\"")
        .replace(
            "\"../data/",
            &format!("\"{}/../data/", env!("CARGO_MANIFEST_DIR")),
        ),
    )
    .unwrap();
    let out = brigade(&["train", &gpu, "--set", "train.schedule=interleaved-1f1b"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("does not yet train reproducibly on CUDA"),
        "{}",
        err(&out)
    );
    // A bf16 plan halves the bytes on its edges.
    let job = tmp("bf16-job.json");
    let out = brigade(&[
        "plan",
        "topologies/quickstart.toml",
        "--set",
        bf16,
        "--out",
        &job,
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&job).unwrap()).unwrap();
    let edge = &plan["edges"][0];
    assert_eq!(edge["dtype"], "bf16", "{edge}");
    let elements: u64 = edge["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .product();
    assert_eq!(edge["max_bytes"].as_u64(), Some(elements * 2), "{edge}");
}
