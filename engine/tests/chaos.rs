//! Chaos: `train --max-restarts` through ranks killed and frozen at random moments (seeded,
//! printed; `BRIGADE_CHAOS_SEED` picks another run). Checkpoints every few steps; every planned
//! fault must land (cause its restart), and the job must finish with the losses and parameters
//! of an uninterrupted run. The test waits for events (ranks' pids, a checkpoint written, a step
//! reached, a restart recorded), never for fixed times, so a loaded machine only slows it.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Stdio};
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

/// What the launcher has written to a metrics file so far: (the highest step trained, the
/// restarts recorded). A line caught half-written is skipped.
fn progress(metrics: &Path) -> (u64, usize) {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    let (mut step, mut restarts) = (0, 0);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("restart").is_some() {
            restarts += 1;
        } else if v.get("loss").is_some() {
            step = step.max(v["step"].as_u64().unwrap_or(0));
        }
    }
    (step, restarts)
}

/// A `train --max-restarts` job under test: on failure, and if the test panics, its launcher
/// and every stage process it started are killed.
struct Job {
    child: Child,
    topology: String,
    log: Option<std::thread::JoinHandle<String>>,
}

impl Job {
    fn kill(&mut self) {
        let _ = self.child.kill();
        for pid in stage_pids(&self.topology) {
            // SAFETY: signalling a stage process this test's job started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }

    /// Stops the job and fails the test with `why` and the launcher's log.
    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        let log = self
            .log
            .take()
            .map(|l| l.join().unwrap())
            .unwrap_or_default();
        panic!("{why}\nlauncher log:\n{log}");
    }

    /// Waits until `ready`, for at most `limit`; fails (saying `what`) when the limit passes or
    /// the job ends first.
    fn wait_for(&mut self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ready() {
            if self.child.try_wait().unwrap().is_some() {
                self.fail(&format!("the job ended while waiting for {what}"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("{what}: not within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.kill();
        }
    }
}

/// Faults injected into the chaos run, in order.
const FAULTS: [&str; 3] = ["kill", "freeze", "kill"];

/// Injects every fault of [`FAULTS`] into `job`, one at a time, each once the ranks of the
/// previous restart have trained past a checkpoint of their own and a few (random) steps more,
/// and waits for the restart it causes. Returns what it did.
fn inject_faults(job: &mut Job, dice: &mut Dice, metrics: &Path, ck: &Path) -> Vec<String> {
    let layers = 6; // quickstart's
    let mut faults = Vec::new();
    let mut victim = None;
    for (i, fault) in FAULTS.into_iter().enumerate() {
        let topology = job.topology.clone();
        // The restart after the previous fault has started fresh ranks.
        let mut pids = Vec::new();
        job.wait_for(&format!("two ranks before fault {i}"), WAIT, || {
            pids = stage_pids(&topology);
            pids.len() == 2 && victim.is_none_or(|v| !pids.contains(&v))
        });
        // They train past a checkpoint of their own (the restart resumes from there), then a
        // random few steps more.
        let resumed = progress(metrics).0;
        job.wait_for(&format!("a checkpoint after step {resumed}"), WAIT, || {
            brigade_stages::checkpoint::latest(ck, layers).is_some_and(|(s, _)| s > resumed)
        });
        let target = progress(metrics).0 + 1 + dice.below(15);
        job.wait_for(&format!("step {target} before fault {i}"), WAIT, || {
            progress(metrics).0 >= target
        });
        let v = pids[dice.below(2) as usize];
        let signal = if fault == "kill" {
            libc::SIGKILL
        } else {
            libc::SIGSTOP
        };
        // SAFETY: signalling a stage process this test's job started.
        unsafe {
            libc::kill(v, signal);
        }
        faults.push(format!("{fault} pid {v} at step {target}"));
        victim = Some(v);
        // The fault lands: the launcher stops every rank and records a restart.
        job.wait_for(&format!("the restart after {faults:?}"), WAIT, || {
            progress(metrics).1 > i
        });
    }
    faults
}

/// The longest wait for one event of the chaos run: far above what anything takes (a frozen
/// rank is noticed after the peer timeout), so a loaded machine only slows the test.
const WAIT: Duration = Duration::from_secs(90);

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
    // Faults land by step ~80 at the latest (each after a checkpoint, every 10 steps, and at
    // most 15 steps more): the job runs well past that whatever the machine's speed.
    let steps = "400";
    let (m, p, ck) = (dir.join("m.jsonl"), dir.join("params"), dir.join("ck"));
    let mut child = brigade()
        .args(["train", &topology, "--steps", steps])
        .args(["--checkpoint-dir", ck.to_str().unwrap()])
        .args(["--checkpoint-every", "10"])
        .args(["--max-restarts", "8", "--restart-backoff", "0.1"])
        // A frozen rank is noticed after this; a live one never stays silent so long, even
        // with 4 test binaries sharing 2 cores.
        .args(["--peer-timeout", "10"])
        .args(["--metrics", m.to_str().unwrap()])
        .args(["--save-params", p.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Some(collect_stderr(&mut child));
    let mut job = Job {
        child,
        topology: topology.clone(),
        log,
    };
    let faults = inject_faults(&mut job, &mut dice, &m, &ck);
    eprintln!("faults: {faults:?}");
    assert_eq!(faults.len(), FAULTS.len(), "every planned fault landed");
    let status = exit_within(
        &mut job.child,
        Duration::from_secs(300),
        "the job did not finish",
    );
    let log = job.log.take().unwrap().join().unwrap();
    assert!(status.success(), "the job failed after {faults:?}:\n{log}");
    assert_eq!(
        progress(&m).1,
        faults.len(),
        "a restart per fault, and no other:\n{log}"
    );
    assert!(log.contains("restart 1/8"), "{log}");
    assert!(log.contains("restart 3/8"), "{log}");
    let got = (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap());
    let want = run_with_outputs(&dir, "ref", "reference", &topology, steps, &[]);
    assert_same("chaos", (&got.0, &got.1), (&want.0, &want.1));
    assert!(stage_pids(&topology).is_empty(), "a stage was left running");
    let _ = std::fs::remove_dir_all(&dir);
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
