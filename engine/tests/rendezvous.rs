//! Ranks that find each other at run time: topologies whose hosts have no address, trained
//! through the rendezvous rank 0 hosts (`--rendezvous`) or with every endpoint given
//! (`--peers`), equal `reference`; a rank with another plan is refused with both hashes, and a
//! rank that never comes is named.

mod common;

use common::*;
use std::process::{Child, Stdio};

/// quickstart on two hosts `a` and `b` without addresses.
fn topology(test: &str) -> String {
    let text = quickstart_text();
    let text = text.split("[[hosts]]").next().unwrap().to_string()
        + "[[hosts]]\nname = \"a\"\ndevices = [\"cpu\"]\n\n[[hosts]]\nname = \"b\"\ndevices = [\"cpu\"]\n\n[partition]\nstages = 2\n";
    let path = tmp(test).join("no-addresses.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn port(offset: u16) -> u16 {
    test_port(offset)
}

fn reference_losses(file: &str, steps: &str) -> Vec<f64> {
    let m = tmp(&format!("rv-ref-{steps}")).join("ref.jsonl");
    let out = run(&[
        "reference",
        file,
        "--steps",
        steps,
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    losses(&m)
}

fn stage(file: &str, rank: &str, extra: &[&str]) -> Child {
    brigade()
        .env_remove("BRIGADE_SECRET")
        .env_remove("BRIGADE_SECRET_FILE")
        .args([
            "stage", file, "--stage", rank, "--steps", "5", "--run-id", "rv",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The losses in a rank's step events.
fn step_losses(out: &std::process::Output) -> Vec<f64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

#[test]
fn launchers_without_addresses_meet_through_the_rendezvous() {
    let file = topology("rv-launch");
    let rv = format!("127.0.0.1:{}", port(0));
    let m = tmp("rv-launch-metrics").join("b.jsonl");
    let launch = |host: &str, metrics: Option<&std::path::Path>| {
        let mut c = brigade();
        c.env_remove("BRIGADE_SECRET")
            .env_remove("BRIGADE_SECRET_FILE")
            .args([
                "launch",
                &file,
                "--host",
                host,
                "--steps",
                "6",
                "--run-id",
                "rv1",
                "--rendezvous",
                &rv,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(m) = metrics {
            c.arg("--metrics").arg(m);
        }
        c.spawn().unwrap()
    };
    let (b, a) = (launch("b", Some(&m)), launch("a", None));
    let (ob, oa) = (b.wait_with_output().unwrap(), a.wait_with_output().unwrap());
    assert!(oa.status.success(), "host a: {}", stderr(&oa));
    assert!(ob.status.success(), "host b: {}", stderr(&ob));
    assert!(
        stderr(&oa).contains("through the rendezvous"),
        "{}",
        stderr(&oa)
    );
    let (got, want) = (losses(&m), reference_losses(&file, "6"));
    assert_eq!(got.len(), 6);
    for (a, b) in got.iter().zip(&want) {
        assert!(((a - b) / b).abs() <= 1e-5, "{a} vs reference {b}");
    }
}

#[test]
fn peers_given_by_the_engine_need_no_rendezvous() {
    let file = topology("rv-peers");
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", port(10), port(11));
    let (a, b) = (
        stage(&file, "0", &["--peers", &peers]),
        stage(&file, "1", &["--peers", &peers]),
    );
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success(), "rank 0: {}", stderr(&oa));
    assert!(ob.status.success(), "rank 1: {}", stderr(&ob));
    let (got, want) = (step_losses(&ob), reference_losses(&file, "5"));
    assert_eq!(got.len(), 5);
    for (a, b) in got.iter().zip(&want) {
        assert!(((a - b) / b).abs() <= 1e-5, "{a} vs reference {b}");
    }
    // A list of the wrong length is bad input.
    let out = stage(&file, "0", &["--peers", "127.0.0.1:1"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 endpoints for 2 ranks"));
}

#[test]
fn another_plan_is_refused_and_a_missing_rank_is_named() {
    let file = topology("rv-mismatch");
    let rv = format!("127.0.0.1:{}", port(20));
    let flags = ["--rendezvous", rv.as_str(), "--connect-timeout", "4"];
    let a = stage(&file, "0", &flags);
    let mut other: Vec<&str> = flags.to_vec();
    other.extend(["--set", "train.lr=0.5"]);
    let b = stage(&file, "1", &other);
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(!oa.status.success() && !ob.status.success());
    let (ea, eb) = (stderr(&oa), stderr(&ob));
    assert!(
        eb.contains("refused rank 1")
            && eb.contains("job hash")
            && eb.contains("rank 0 has job hash"),
        "{eb}"
    );
    assert!(ea.contains("ranks [1] did not register"), "{ea}");
}

/// Ranks started with only an engine's variables (no --stage, no --rendezvous).
fn engine_rank(file: &str, vars: &[(&str, String)], extra: &[&str]) -> Child {
    let mut c = brigade();
    for v in [
        "BRIGADE_SECRET",
        "BRIGADE_SECRET_FILE",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_JOB_NODELIST",
        "SLURM_STEP_NODELIST",
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "JOB_COMPLETION_INDEX",
    ] {
        c.env_remove(v);
    }
    c.envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["stage", file, "--steps", "5", "--run-id", "rv-env"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn torchrun_and_slurm_variables_are_enough() {
    let file = topology("rv-env");
    let want = reference_losses(&file, "5");
    let torchrun = |rank: &str| {
        vec![
            ("RANK", rank.to_string()),
            ("WORLD_SIZE", "2".to_string()),
            ("MASTER_ADDR", "127.0.0.1".to_string()),
            ("MASTER_PORT", port(30).to_string()),
        ]
    };
    let slurm = |rank: &str| {
        vec![
            ("SLURM_PROCID", rank.to_string()),
            ("SLURM_NTASKS", "2".to_string()),
            ("SLURM_JOB_NODELIST", "localhost".to_string()),
        ]
    };
    let rv_port = port(32).to_string();
    for (engine, a, b, extra) in [
        ("torchrun", torchrun("0"), torchrun("1"), vec![]),
        (
            "slurm",
            slurm("0"),
            slurm("1"),
            vec!["--rendezvous-port", rv_port.as_str()],
        ),
    ] {
        let (pa, pb) = (
            engine_rank(&file, &a, &extra),
            engine_rank(&file, &b, &extra),
        );
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        assert!(oa.status.success(), "{engine} rank 0: {}", stderr(&oa));
        assert!(ob.status.success(), "{engine} rank 1: {}", stderr(&ob));
        let got = step_losses(&ob);
        assert_eq!(got.len(), 5, "{engine}");
        for (x, y) in got.iter().zip(&want) {
            assert!(
                ((x - y) / y).abs() <= 1e-5,
                "{engine}: {x} vs reference {y}"
            );
        }
    }
}

#[test]
fn bad_engine_environments_name_the_variable() {
    let file = topology("rv-env-bad");
    let vars = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    // (environment, what the error says)
    let table = [
        (
            vars(&[("RANK", "0"), ("WORLD_SIZE", "3")]),
            "WORLD_SIZE: 3 ranks were started",
        ),
        (
            vars(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "2")]),
            "SLURM_PROCID: rank 2 does not exist",
        ),
        (
            vars(&[("RANK", "x")]),
            "RANK: \"x\": not a non-negative integer",
        ),
        (
            vars(&[("SLURM_PROCID", "0"), ("SLURM_JOB_NODELIST", "n[1-")]),
            "SLURM_JOB_NODELIST",
        ),
        (vars(&[]), "no rank"),
    ];
    for (env, says) in table {
        let out = engine_rank(&file, &env, &[]).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(says),
            "{env:?} should say {says}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn kubernetes_index_with_a_rendezvous_flag() {
    let file = topology("rv-k8s");
    let want = reference_losses(&file, "5");
    let rv = format!("127.0.0.1:{}", port(40));
    let k8s = |i: &str| vec![("JOB_COMPLETION_INDEX", i.to_string())];
    let flags = ["--rendezvous", rv.as_str()];
    let (a, b) = (
        engine_rank(&file, &k8s("0"), &flags),
        engine_rank(&file, &k8s("1"), &flags),
    );
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success(), "index 0: {}", stderr(&oa));
    assert!(ob.status.success(), "index 1: {}", stderr(&ob));
    let got = step_losses(&ob);
    assert_eq!(got.len(), 5);
    for (x, y) in got.iter().zip(&want) {
        assert!(((x - y) / y).abs() <= 1e-5, "{x} vs reference {y}");
    }
}

#[test]
fn an_unreachable_rendezvous_and_a_doubled_index_are_errors() {
    let file = topology("rv-bad");
    // Nobody hosts this rendezvous: the rank gives up at its connect timeout, naming it.
    let nobody = format!("127.0.0.1:{}", port(50));
    let start = std::time::Instant::now();
    let out = stage(
        &file,
        "1",
        &["--rendezvous", &nobody, "--connect-timeout", "2"],
    )
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    assert!(stderr(&out).contains(&nobody), "{}", stderr(&out));
    // Two ranks claim index 1: one of them is refused, naming the rank.
    let rv = format!("127.0.0.1:{}", port(52));
    let flags = ["--rendezvous", rv.as_str(), "--connect-timeout", "6"];
    let torch = |r: &str| vec![("RANK", r.to_string()), ("WORLD_SIZE", "2".to_string())];
    let procs = [
        engine_rank(&file, &torch("0"), &flags),
        engine_rank(&file, &torch("1"), &flags),
        engine_rank(&file, &torch("1"), &flags),
    ];
    let outs: Vec<_> = procs
        .into_iter()
        .map(|p| p.wait_with_output().unwrap())
        .collect();
    let all: String = outs.iter().map(stderr).collect::<Vec<_>>().join("\n");
    assert!(all.contains("rank 1 registered twice"), "{all}");
    assert!(
        all.contains("rank 1 from RANK"),
        "the message names the variable: {all}"
    );
    assert!(outs.iter().any(|o| !o.status.success()), "{all}");
}
