//! Soak: 2,000 steps of pipelined training whose per-stage resident memory stays flat.
//! `cargo test --release -p brigade-engine --test soak -- --ignored --nocapture`

mod common;

use common::*;
use std::io::BufReader;
use std::process::Stdio;
use std::time::Duration;

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
#[ignore = "a long run; see docs/reliability.md"]
fn two_thousand_steps_keep_rss_flat() {
    let mut job = brigade()
        .args(["train", "topologies/quickstart.toml", "--steps", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep reading the launcher's stderr to the end: a closed pipe would kill it.
    let mut err = BufReader::new(job.stderr.take().unwrap());
    let dir = run_dir_from(&mut err);
    let drain = std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let pids = wait_for_pids(&dir, 2);
    // Sample every stage's RSS until the job ends.
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); 2];
    while job.try_wait().unwrap().is_none() {
        for (k, &p) in pids.iter().enumerate() {
            if let Some(r) = rss_kib(p) {
                samples[k].push(r);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(job.wait().unwrap().success());
    let _ = drain.join();
    for (k, s) in samples.iter().enumerate() {
        assert!(s.len() >= 8, "too few samples of stage {k}");
        let quarter = s.len() / 4;
        let early = *s[quarter..2 * quarter].iter().max().unwrap() as f64;
        let late = *s[3 * quarter..].iter().max().unwrap() as f64;
        println!(
            "stage {k}: RSS {} KiB at 25-50% of the run, {} KiB at 75-100% ({} samples)",
            early,
            late,
            s.len()
        );
        assert!(
            late <= early * 1.10,
            "stage {k} RSS grew from {early} KiB to {late} KiB"
        );
    }
}
