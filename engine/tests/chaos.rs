//! Chaos: `train --max-restarts` through ranks killed and frozen at random moments (seeded,
//! printed; `BRIGADE_CHAOS_SEED` picks another run). Checkpoints every few steps; the job must
//! finish with the losses and parameters of an uninterrupted run.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Stage processes of the job started from `topology` (their command lines name it).
fn stage_pids(topology: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" stage ") && cmd.contains(topology) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (≤ 20 s) until the job started from `topology` runs `n` stage processes.
fn wait_for_ranks(topology: &str, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = stage_pids(topology);
        if pids.len() == n {
            return pids;
        }
        assert!(Instant::now() < deadline, "the ranks did not (re)start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small seeded generator (xorshift), so the chaos is reproducible.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_run_through_killed_and_frozen_ranks_ends_as_an_uninterrupted_run() {
    let dir = tmp("chaos");
    let topology = dir.join("chaos.toml");
    std::fs::write(&topology, quickstart_text()).unwrap();
    let topology = topology.to_str().unwrap().to_string();
    let seed: u64 = std::env::var("BRIGADE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128);
    eprintln!("chaos seed {seed} (set BRIGADE_CHAOS_SEED to replay another)");
    let mut dice = Dice(seed | 1);
    let steps = "1200";
    let (m, p, ck) = (dir.join("m.jsonl"), dir.join("params"), dir.join("ck"));
    let mut child = brigade()
        .args([
            "train",
            &topology,
            "--steps",
            steps,
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--checkpoint-every",
            "10",
            "--max-restarts",
            "8",
            "--restart-backoff",
            "0.1",
            "--peer-timeout",
            "2",
            "--metrics",
            m.to_str().unwrap(),
            "--save-params",
            p.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_stderr(&mut child);
    // Three faults at random moments: kill, freeze, kill.
    let mut faults = Vec::new();
    for fault in ["kill", "freeze", "kill"] {
        std::thread::sleep(Duration::from_millis(400 + dice.below(800)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let pids = loop {
            let pids = stage_pids(&topology);
            if pids.len() == 2 || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                break pids;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if pids.len() != 2 {
            break;
        }
        let victim = pids[dice.below(2) as usize];
        let signal = if fault == "kill" {
            libc::SIGKILL
        } else {
            libc::SIGSTOP
        };
        // SAFETY: signalling a stage process this test's job started.
        unsafe {
            libc::kill(victim, signal);
        }
        faults.push(format!("{fault} pid {victim}"));
        // Wait for the launcher to notice and start again (new processes).
        let deadline = Instant::now() + Duration::from_secs(15);
        while stage_pids(&topology).contains(&victim) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("faults: {faults:?}");
    let status = exit_within(
        &mut child,
        Duration::from_secs(120),
        "the job did not finish",
    );
    let log = log.join().unwrap();
    assert!(status.success(), "the job failed after {faults:?}:\n{log}");
    assert!(!faults.is_empty(), "no fault was injected:\n{log}");
    let restarts = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"restart\""))
        .count();
    assert_eq!(restarts, faults.len(), "a restart per fault:\n{log}");
    assert!(log.contains("restart 1/8"), "{log}");
    let got = (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap());
    let want = run_with_outputs(&dir, "ref", "reference", &topology, steps, &[]);
    assert_same("chaos", (&got.0, &got.1), (&want.0, &want.1));
    assert!(stage_pids(&topology).is_empty(), "a stage was left running");
}

#[test]
fn spent_restarts_end_the_job_with_every_cause() {
    let dir = tmp("chaos-spent");
    let topology = dir.join("spent.toml");
    std::fs::write(&topology, quickstart_text()).unwrap();
    let topology = topology.to_str().unwrap().to_string();
    let mut child = brigade()
        .args([
            "train",
            &topology,
            "--steps",
            "1000000",
            "--max-restarts",
            "1",
        ])
        .args(["--restart-backoff", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_stderr(&mut child);
    let mut killed = Vec::new();
    for _ in 0..2 {
        let pids = wait_for_ranks(&topology, 2);
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling a stage process this test's job started.
        unsafe {
            libc::kill(pids[1], libc::SIGKILL);
        }
        killed.push(pids[1]);
        while stage_pids(&topology).contains(&pids[1]) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(!status.success(), "{log}");
    assert_ne!(status.code(), Some(2), "not bad input: {log}");
    for want in [
        "without --checkpoint-dir",
        "restart 1/1",
        "the job failed 2 times (1 restarts allowed)",
        "attempt 1:",
        "attempt 2:",
    ] {
        assert!(log.contains(want), "no {want:?} in:\n{log}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(stage_pids(&topology).is_empty(), "a stage was left running");
}

#[test]
fn a_device_taken_away_mid_run_finishes_on_fewer_ranks() {
    let dir = tmp("chaos-elastic");
    let topology = dir.join("elastic.toml");
    let two = quickstart_text();
    std::fs::write(&topology, &two).unwrap();
    let topology = topology.to_str().unwrap().to_string();
    let steps = "600";
    let (m, p, ck) = (dir.join("m.jsonl"), dir.join("params"), dir.join("ck"));
    let mut child = brigade()
        .args(["train", &topology, "--steps", steps])
        .args([
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--checkpoint-every",
            "10",
        ])
        .args([
            "--max-restarts",
            "2",
            "--restart-backoff",
            "0.1",
            "--min-ranks",
            "1",
        ])
        .args([
            "--metrics",
            m.to_str().unwrap(),
            "--save-params",
            p.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_stderr(&mut child);
    let pids = wait_for_ranks(&topology, 2);
    std::thread::sleep(Duration::from_millis(400));
    // The second device leaves the topology, and its rank dies.
    let one = two
        .replace("devices = [\"cpu\", \"cpu\"]", "devices = [\"cpu\"]")
        .replace("stages = 2", "stages = 1");
    assert_ne!(one, two);
    std::fs::write(&topology, one).unwrap();
    // SAFETY: signalling a stage process this test's job started.
    unsafe {
        libc::kill(pids[1], libc::SIGKILL);
    }
    let status = exit_within(
        &mut child,
        Duration::from_secs(120),
        "the job did not finish",
    );
    let log = log.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("re-planned for the restart: 1 ranks (was 2)"),
        "{log}"
    );
    // Any split trains what the reference trains.
    let got = (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap());
    let want = run_with_outputs(&dir, "ref", "reference", &topology, steps, &[]);
    assert_same("elastic", (&got.0, &got.1), (&want.0, &want.1));
}

#[test]
fn a_back_off_that_is_not_a_duration_is_bad_input() {
    for bad in ["nan", "-1", "inf", "31"] {
        let arg = format!("--restart-backoff={bad}");
        let out = run(&["train", "topologies/quickstart.toml", &arg]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a number of seconds from 0 to 30"),
            "{}",
            stderr(&out)
        );
    }
}
