//! A job fails fast, completely and clearly: a killed stage ends the job within 10 s with no
//! orphans, and peers from another run or another topology are refused.

mod common;

use common::*;
use std::io::BufReader;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn killed_stage_fails_the_job_within_10_s_without_orphans() {
    let rest = kill_rank_1_of(&["train", "topologies/quickstart.toml", "--steps", "1000000"]);
    assert!(
        rest.contains("stage 1 (host local") && rest.contains("killed by signal 9"),
        "message does not name the stage and what happened:\n{rest}"
    );
}

/// Two single-device hosts on loopback, so two hand-started stages meet over TCP whatever their
/// run ids.
fn loopback_pair(test: &str, offset: u16) -> String {
    let port = test_port(offset);
    two_host_topology(test, port, "127.0.0.1", port + 4)
}

fn mismatched_pair(test: &str, extra0: &[&str], extra1: &[&str]) -> (String, String) {
    let file = loopback_pair(test, if test == "run" { 0 } else { 10 });
    let spawn = |k: &str, extra: &[&str]| {
        brigade()
            .args([
                "stage",
                &file,
                "--stage",
                k,
                "--steps",
                "5",
                "--connect-timeout",
                "20",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    let (a, b) = (spawn("0", extra0), spawn("1", extra1));
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "refusal took {:?}",
        start.elapsed()
    );
    assert!(
        !oa.status.success() && !ob.status.success(),
        "mismatched stages must both fail"
    );
    (stderr(&oa), stderr(&ob))
}

#[test]
fn peer_from_another_run_is_refused() {
    let (e0, e1) = mismatched_pair(
        "run",
        &["--run-id", "00000000000000aa"],
        &["--run-id", "00000000000000bb"],
    );
    let both = format!("{e0}\n{e1}");
    assert!(
        both.contains("refused") && both.contains("peer belongs to run 00000000000000"),
        "{both}"
    );
}

#[test]
fn peer_with_another_topology_is_refused() {
    let (e0, e1) = mismatched_pair(
        "topo",
        &["--run-id", "00000000000000cc"],
        &["--run-id", "00000000000000cc", "--set", "train.lr=0.5"],
    );
    let both = format!("{e0}\n{e1}");
    assert!(
        both.contains("refused") && both.contains("different topology"),
        "{both}"
    );
}

#[test]
fn silent_peer_on_another_host_fails_its_neighbour_within_10_s() {
    let file = loopback_pair("silent", 20);
    let spawn = |host: &str| {
        brigade()
            .args([
                "launch",
                &file,
                "--host",
                host,
                "--steps",
                "1000000",
                "--run-id",
                "silent-test",
                "--peer-timeout",
                "3",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    // Host a's launcher names the run; its directory holds every local stage's pid file.
    let mut a_err = BufReader::new(a.stderr.take().unwrap());
    let dir = run_dir_from(&mut a_err);
    let p1 = wait_for_pids(&dir, 2)[1];
    std::thread::sleep(Duration::from_millis(500));
    unsafe {
        libc::kill(p1, libc::SIGSTOP); // alive but silent: no heartbeats, no data
    }
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = a.try_wait().unwrap() {
            break s;
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            unsafe {
                libc::kill(p1, libc::SIGKILL);
            }
            let _ = b.kill();
            let _ = a.kill();
            panic!("host a did not notice the silent peer within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut a_err, &mut err);
    unsafe {
        libc::kill(p1, libc::SIGKILL);
    }
    let _ = b.wait();
    assert!(!status.success());
    assert!(
        err.contains("lost peer stage 1") && err.contains("127.0.0.1"),
        "message does not name the lost peer:\n{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_closed_stderr_does_not_end_the_job() {
    let dir = tmp("closed-stderr");
    let m = dir.join("m.jsonl");
    let mut child = brigade()
        .args(["train", "topologies/quickstart.toml", "--steps", "300"])
        .args(["--metrics", m.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, then close the pipe (as `brigade train … 2>&1 | head -1` does).
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let _ = run_dir_from(&mut err);
    drop(err);
    let status = exit_within(
        &mut child,
        Duration::from_secs(60),
        "the job did not finish",
    );
    assert!(status.success(), "exit {status:?}");
    assert_eq!(losses(&m).len(), 300);
}
