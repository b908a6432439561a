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
    let full = reference_losses(&dir, "14");
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
    assert!(resume_step >= target);
    if resume_step >= 14 {
        return; // this machine outran the kill; nothing left to resume
    }
    let m = dir.join("resumed.jsonl");
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--steps",
        "14",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
        "--set",
        THREE,
        "--set",
        "partition.stages=3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_tail_matches(&losses(&m), &full, resume_step as usize);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_checkpoint_is_ignored() {
    let dir = tmp("ckpt-torn");
    let ck = dir.join("ck");
    let full = reference_losses(&dir, "9");
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A crash while stage 1 wrote step 6: a layer file cut short and no manifest yet.
    let six = step_dir(&ck, 6);
    std::fs::remove_file(six.join("stage-1.done")).unwrap();
    std::fs::write(six.join("layer-5.safetensors"), b"partial").unwrap();
    assert_eq!(latest(&ck, 6).map(|(s, _)| s), Some(3));
    let m = dir.join("resumed.jsonl");
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--steps",
        "9",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("(step 3)"), "{}", stderr(&out));
    assert_tail_matches(&losses(&m), &full, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reference_and_train_share_the_checkpoint_format() {
    let dir = tmp("ckpt-shared");
    let full = reference_losses(&dir, "8");
    let (a, b) = (dir.join("a"), dir.join("b"));
    // reference writes, train (3 stages) resumes.
    assert!(
        run(&[
            "reference",
            "topologies/quickstart.toml",
            "--steps",
            "4",
            "--checkpoint-every",
            "4",
            "--checkpoint-dir",
            a.to_str().unwrap()
        ])
        .status
        .success()
    );
    let m = dir.join("t.jsonl");
    let out = run(&[
        "train",
        "topologies/quickstart.toml",
        "--steps",
        "8",
        "--checkpoint-dir",
        a.to_str().unwrap(),
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
        "--set",
        THREE,
        "--set",
        "partition.stages=3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_tail_matches(&losses(&m), &full, 4);
    // train writes, reference resumes.
    assert!(
        run(&[
            "train",
            "topologies/quickstart.toml",
            "--steps",
            "4",
            "--checkpoint-every",
            "2",
            "--checkpoint-dir",
            b.to_str().unwrap()
        ])
        .status
        .success()
    );
    let m = dir.join("r.jsonl");
    let out = run(&[
        "reference",
        "topologies/quickstart.toml",
        "--steps",
        "8",
        "--checkpoint-dir",
        b.to_str().unwrap(),
        "--resume",
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_tail_matches(&losses(&m), &full, 4);
    let _ = std::fs::remove_dir_all(&dir);
}
