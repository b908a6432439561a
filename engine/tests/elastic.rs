//! Restarts across processes that are not one launcher's children: ranks started one by one (as
//! Slurm, torchrun or Kubernetes start them) with `stage --max-restarts`, and per-host launchers
//! with `launch --max-restarts`. They meet in restart rounds at the rendezvous; a killed rank is
//! a restart of every rank, a lost agent (a host gone) is, with `--min-ranks`, a smaller world
//! re-planned. Either way the run ends with the reference's losses and parameters.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Rank processes (not agents) of this test: launched from a plan in a run directory, with
/// `--stage K`; (pid, K).
fn workers(marker: &str) -> Vec<(i32, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = String::from_utf8_lossy(&cmd)
            .split('\0')
            .map(str::to_string)
            .collect();
        let is_worker =
            args.iter().any(|a| a == "--launcher-pid") && args.iter().any(|a| a.contains(marker));
        let stage = args
            .iter()
            .position(|a| a == "--stage")
            .and_then(|i| args.get(i + 1)?.parse().ok());
        if let (true, Some(k)) = (is_worker && alive(pid), stage) {
            found.push((pid, k));
        }
    }
    found
}

/// Waits (≤ 30 s) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn newest_checkpoint(ck: &Path) -> u64 {
    brigade_stages::checkpoint::latest(ck, 6).map_or(0, |(s, _)| s)
}

fn kill(pid: i32) {
    // SAFETY: signalling a process this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The flags every agent of a restart test gets: `steps`, up to 3 restarts at once, elastic
/// down to `min_ranks` after 3 s, checkpoints every 10 steps in `ck`, metrics and parameters.
fn restarting(steps: &str, min_ranks: usize, ck: &Path, m: &Path, p: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    [
        "--steps",
        steps,
        "--max-restarts",
        "3",
        "--restart-backoff",
        "0",
        "--min-ranks",
        &min_ranks.to_string(),
        "--rejoin-timeout",
        "3",
        "--checkpoint-dir",
        &path(ck),
        "--checkpoint-every",
        "10",
        "--metrics",
        &path(m),
        "--save-params",
        &path(p),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String], log: &Path) -> Child {
    brigade()
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Once `ranks` rank processes train and have checkpointed, kills rank 1's process and waits
/// until every rank has restarted (a restart line in the metrics `m`) and trained 50 steps more.
fn kill_rank_1_and_wait_for_the_restart(marker: &str, ranks: usize, ck: &Path, m: &Path) {
    wait_until("the ranks training", || {
        workers(marker).len() == ranks && newest_checkpoint(ck) >= 50
    });
    let (victim, _) = *workers(marker).iter().find(|(_, k)| *k == 1).unwrap();
    kill(victim);
    let after = newest_checkpoint(ck);
    wait_until("a restart, and training again", || {
        std::fs::read_to_string(m)
            .unwrap_or_default()
            .contains("\"restart\":1")
            && newest_checkpoint(ck) >= after + 50
    });
}

/// Three ranks, each its own agent (as an engine starts them). Rank 1's process is killed:
/// every rank restarts from the newest checkpoint. Then rank 2's agent is killed with its rank
/// (its host lost): after --rejoin-timeout the two left re-plan onto two ranks and finish.
#[test]
fn ranks_started_one_by_one_restart_together_and_go_on_without_a_lost_one() {
    let dir = tmp("elastic-stage");
    let plan = dir.join("job.json");
    let ck = dir.join("ck");
    let (m, p) = (dir.join("m.jsonl"), dir.join("params"));
    let topology = dir.join("three.toml");
    std::fs::write(&topology, quickstart_text()).unwrap();
    let out = run(&[
        "plan",
        topology.to_str().unwrap(),
        "--set",
        &hosts(3),
        "--set",
        "partition.stages=3",
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rv = format!("127.0.0.1:{}", test_port(40));
    let steps = "3000";
    let agents: Vec<(Child, std::path::PathBuf)> = (0..3)
        .map(|k| {
            let log = dir.join(format!("agent{k}.log"));
            let args: Vec<String> = [
                "stage",
                plan.to_str().unwrap(),
                "--stage",
                &k.to_string(),
                "--rendezvous",
                &rv,
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(restarting(steps, 2, &ck, &m, &p))
            .collect();
            (spawn(&args, &log), log)
        })
        .collect();
    let marker = dir.to_str().unwrap().to_string();
    // The plan the workers get is the agents' copy; they are told apart by --plan-source.
    kill_rank_1_and_wait_for_the_restart(&marker, 3, &ck, &m);
    let mut agents = agents;
    let (mut lost, _) = agents.remove(2);
    kill(lost.id() as i32);
    let _ = lost.wait();
    let logs: Vec<std::path::PathBuf> = agents.iter().map(|(_, l)| l.clone()).collect();
    for ((mut c, _), log) in agents.into_iter().zip(&logs) {
        let status = exit_within(&mut c, Duration::from_secs(120), "an agent did not finish");
        assert!(
            status.success(),
            "{}",
            std::fs::read_to_string(log).unwrap()
        );
    }
    let log0 = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log0.contains("re-planned for 2 ranks (was 3)") && log0.contains("round 2: 2 members"),
        "{log0}"
    );
    let text = std::fs::read_to_string(&m).unwrap();
    assert_eq!(text.matches("\"restart\"").count(), 2, "{text}");
    let got = (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap());
    let want = run_with_outputs(&dir, "ref", "reference", plan.to_str().unwrap(), steps, &[]);
    assert_same("elastic stage agents", (&got.0, &got.1), (&want.0, &want.1));
    let _ = std::fs::remove_dir_all(dir);
}

/// Two hosts' launchers with restarts: a rank killed on host b restarts both hosts; then host
/// b's launcher is lost, and host a goes on alone (one rank) after --rejoin-timeout.
#[test]
fn launchers_restart_together_and_a_lost_host_leaves_a_smaller_job() {
    let dir = tmp("elastic-launch");
    let topology = dir.join("two.toml");
    let text = quickstart_text();
    let head = text.split("[[hosts]]").next().unwrap();
    let (pa, pb) = (test_port(44), test_port(48));
    std::fs::write(
        &topology,
        format!(
            "{head}[[hosts]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport = {pa}\ndevices = [\"cpu\"]\n\n\
             [[hosts]]\nname = \"b\"\naddress = \"127.0.0.1\"\nport = {pb}\ndevices = [\"cpu\"]\n\n\
             [partition]\nstages = 2\n"
        ),
    )
    .unwrap();
    let topology = topology.to_str().unwrap().to_string();
    let ck = dir.join("ck");
    let (m, p) = (dir.join("m.jsonl"), dir.join("params"));
    let rv = format!("127.0.0.1:{}", test_port(42));
    let steps = "3000";
    let mut agents: Vec<(Child, std::path::PathBuf)> = ["a", "b"]
        .iter()
        .map(|h| {
            let log = dir.join(format!("launch-{h}.log"));
            let args: Vec<String> = [
                "launch",
                &topology,
                "--host",
                h,
                "--run-id",
                "elastic",
                "--rendezvous",
                &rv,
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(restarting(steps, 1, &ck, &m, &p))
            .collect();
            (spawn(&args, &log), log)
        })
        .collect();
    let marker = topology.clone();
    kill_rank_1_and_wait_for_the_restart(&marker, 2, &ck, &m);
    let (mut lost, _) = agents.remove(1);
    kill(lost.id() as i32);
    let _ = lost.wait();
    let (mut a, log) = agents.remove(0);
    let status = exit_within(&mut a, Duration::from_secs(120), "host a did not finish");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("re-planned without b for 1 ranks (was 2)"),
        "{log}"
    );
    let got = (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap());
    let want = run_with_outputs(&dir, "ref", "reference", &topology, steps, &[]);
    assert_same("elastic launchers", (&got.0, &got.1), (&want.0, &want.1));
    let _ = std::fs::remove_dir_all(dir);
}

/// Without --min-ranks a restart needs every rank back: a lost agent ends the others within
/// the connect timeout, naming who is missing and every attempt's cause.
#[test]
fn without_min_ranks_a_lost_agent_ends_the_job_naming_it() {
    let dir = tmp("elastic-missing");
    let topology = dir.join("q.toml");
    std::fs::write(&topology, quickstart_text()).unwrap();
    let rv = format!("127.0.0.1:{}", test_port(52));
    let ck = dir.join("ck");
    let agents: Vec<(Child, std::path::PathBuf)> = (0..2)
        .map(|k| {
            let log = dir.join(format!("agent{k}.log"));
            let args: Vec<String> = [
                "stage",
                topology.to_str().unwrap(),
                "--stage",
                &k.to_string(),
                "--rendezvous",
                &rv,
                "--steps",
                "100000",
                "--max-restarts",
                "2",
                "--restart-backoff",
                "0",
                "--connect-timeout",
                "3",
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--checkpoint-every",
                "10",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            (spawn(&args, &log), log)
        })
        .collect();
    let marker = dir.to_str().unwrap().to_string();
    wait_until("two ranks training", || {
        workers(&marker).len() == 2 && newest_checkpoint(&ck) >= 20
    });
    let mut agents = agents;
    let (mut lost, _) = agents.remove(1);
    kill(lost.id() as i32);
    let _ = lost.wait();
    let (mut a, log) = agents.remove(0);
    let status = exit_within(
        &mut a,
        Duration::from_secs(30),
        "rank 0's agent did not give up",
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the job failed 1 times") && log.contains("missing rank 1"),
        "{log}"
    );
    assert!(workers(&marker).is_empty(), "a rank was left running");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn restarts_across_hosts_need_a_rendezvous() {
    let file = two_host_topology(
        "elastic-no-rendezvous",
        test_port(56),
        "127.0.0.1",
        test_port(58),
    );
    let out = run(&["launch", &file, "--host", "a", "--max-restarts", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--rendezvous"), "{}", stderr(&out));
    let out = run(&[
        "stage",
        "topologies/quickstart.toml",
        "--stage",
        "0",
        "--max-restarts",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-restarts needs a rendezvous"),
        "{}",
        stderr(&out)
    );
}
