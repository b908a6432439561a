//! Checkpoints survive: a job killed at a random step resumes and reproduces the uninterrupted
//! losses, also on a different number of stages; a torn checkpoint is ignored; `reference` and
//! `train` read each other's checkpoints.

mod common;

use brigade_stages::checkpoint::{latest, step_dir};
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const REL: f64 = 1e-6;
const THREE: &str = r#"hosts=[{name="local",address="127.0.0.1",devices=["cpu","cpu","cpu"]}]"#;

fn reference_losses(dir: &std::path::Path, steps: &str) -> Vec<f64> {
    let m = dir.join("full.jsonl");
    let out = run(&[
        "reference",
        "topologies/quickstart.toml",
        "--steps",
        steps,
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    losses(&m)
}

/// `brigade <cmd> quickstart --steps <steps>` checkpointing every `every` steps into `ck`.
fn checkpointing(cmd: &str, steps: &str, every: &str, ck: &std::path::Path) {
    let out = run(&[
        cmd,
        "topologies/quickstart.toml",
        "--steps",
        steps,
        "--checkpoint-every",
        every,
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `brigade <cmd> quickstart --steps <steps> --resume` from `ck` (plus `extra` flags): the losses
/// it logged and its stderr.
fn resumed(cmd: &str, steps: &str, ck: &std::path::Path, extra: &[&str]) -> (Vec<f64>, String) {
    let m = ck.with_extension(format!("{cmd}-resumed.jsonl"));
    let mut args = vec![
        cmd,
        "topologies/quickstart.toml",
        "--steps",
        steps,
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    (losses(&m), stderr(&out))
}

fn assert_tail_matches(resumed: &[f64], full: &[f64], from_step: usize) {
    assert_eq!(
        resumed.len(),
        full.len() - from_step,
        "resumed run logged {} steps",
        resumed.len()
    );
    for (i, (a, b)) in resumed.iter().zip(&full[from_step..]).enumerate() {
        assert!(
            ((a - b) / b).abs() <= REL,
            "step {}: resumed {a} vs uninterrupted {b}",
            from_step + i + 1
        );
    }
}

#[test]
fn killed_job_resumes_on_another_stage_count_with_the_same_losses() {
    let dir = tmp("ckpt-kill");
    let ck = dir.join("ck");
    // Far beyond the kill point, so the resumed run always has steps left to compare.
    let steps = 200;
    let full = reference_losses(&dir, &steps.to_string());
    // A pseudo-random kill point from the clock: after checkpoint 2, 4 or 6.
    let target = 2
        * (1 + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 3) as u64);
    let mut job = brigade()
        .args([
            "train",
            "topologies/quickstart.toml",
            "--steps",
            "100000",
            "--checkpoint-every",
            "2",
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest(&ck, 6).is_none_or(|(s, _)| s < target) {
        assert!(Instant::now() < deadline, "no checkpoint at step {target}");
        std::thread::sleep(Duration::from_millis(5));
    }
    job.kill().unwrap(); // the launcher dies; its stages die with it
    job.wait().unwrap();
    let (resume_step, _) = latest(&ck, 6).unwrap();
    assert!(
        (target..steps).contains(&resume_step),
        "checkpoint of step {resume_step} after a kill at {target}"
    );
    let (got, _) = resumed(
        "train",
        &steps.to_string(),
        &ck,
        &["--set", THREE, "--set", "partition.stages=3"],
    );
    assert_tail_matches(&got, &full, resume_step as usize);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_checkpoint_is_ignored() {
    let dir = tmp("ckpt-torn");
    let ck = dir.join("ck");
    let full = reference_losses(&dir, "9");
    checkpointing("train", "6", "3", &ck);
    // A crash while stage 1 wrote step 6: a layer file cut short and no manifest yet.
    let six = step_dir(&ck, 6);
    std::fs::remove_file(six.join("stage-1.done")).unwrap();
    std::fs::write(six.join("layer-5.safetensors"), b"partial").unwrap();
    assert_eq!(latest(&ck, 6).map(|(s, _)| s), Some(3));
    let (got, err) = resumed("train", "9", &ck, &[]);
    assert!(err.contains("(step 3)"), "{err}");
    assert_tail_matches(&got, &full, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reference_and_train_share_the_checkpoint_format() {
    let dir = tmp("ckpt-shared");
    let full = reference_losses(&dir, "8");
    let (a, b) = (dir.join("a"), dir.join("b"));
    // reference writes, train (3 stages) resumes.
    checkpointing("reference", "4", "4", &a);
    let (got, _) = resumed(
        "train",
        "8",
        &a,
        &["--set", THREE, "--set", "partition.stages=3"],
    );
    assert_tail_matches(&got, &full, 4);
    // train writes, reference resumes.
    checkpointing("train", "4", "2", &b);
    let (got, _) = resumed("reference", "8", &b, &[]);
    assert_tail_matches(&got, &full, 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_and_cut_optimizer_records_are_refused_with_their_path() {
    let dir = tmp("ckpt-optim");
    let ck = dir.join("ck");
    checkpointing("train", "3", "3", &ck);
    let three = step_dir(&ck, 3);
    let good = std::fs::read(three.join("layer-0.optim")).unwrap();
    // Another layer's state (burn would load it and silently start layer 0's Adam afresh),
    // then a record cut short.
    let cases: [(Vec<u8>, &str); 2] = [
        (
            std::fs::read(three.join("layer-3.optim")).unwrap(),
            "belongs to no parameter of this layer",
        ),
        (good[..good.len() / 3].to_vec(), "not an optimizer record"),
    ];
    for (bytes, want) in cases {
        std::fs::write(three.join("layer-0.optim"), bytes).unwrap();
        for cmd in ["train", "reference"] {
            let out = run(&[
                cmd,
                "topologies/quickstart.toml",
                "--steps",
                "5",
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--resume",
            ]);
            let err = stderr(&out);
            assert!(!out.status.success(), "{cmd}: {err}");
            assert!(
                err.contains("layer-0.optim") && err.contains(want),
                "{cmd}: no path or {want:?} in: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
