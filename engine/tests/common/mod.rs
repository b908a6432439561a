//! Helpers for tests that run the `brigade` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn brigade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_brigade"));
    c.current_dir(format!(
        "{}/..",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    ));
    c
}

pub fn run(args: &[&str]) -> Output {
    brigade().args(args).output().expect("run brigade")
}

/// A fresh directory for one test.
pub fn tmp(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brigade-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn losses(path: &PathBuf) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        // Evaluation ({"step", "val_loss", …}) and restart lines carry no training loss.
        .filter(|l| l.contains("\"loss\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// quickstart.toml's text with its data paths made absolute, for copies kept elsewhere.
pub fn quickstart_text() -> String {
    let root = format!(
        "{}/..",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    std::fs::read_to_string(format!("{root}/topologies/quickstart.toml"))
        .unwrap()
        // Its data paths are relative to topologies/.
        .replace("\"../data/", &format!("\"{root}/data/"))
}

/// A copy of quickstart.toml (on synthetic data) on two single-device hosts `a` (127.0.0.1, `port`) and `b`
/// (`address_b`, `port_b`), in a fresh directory for `test`; returns its path.
pub fn two_host_topology(test: &str, port: u16, address_b: &str, port_b: u16) -> String {
    // Synthetic data and so no evaluation: peers written in other languages (pyzmq, the
    // zeromq crate) play a rank here and speak only the training messages.
    let text = quickstart_text();
    let (head, rest) = text.split_once("[data]").unwrap();
    let (_, tail) = rest.split_once("[train]").unwrap();
    let text = format!("{head}[data]\nsource = \"synthetic\"\nseed = 7\n\n[train]{tail}");
    let text = text.split("[[hosts]]").next().unwrap().to_string()
        + &format!(
            "[[hosts]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport = {port}\ndevices = [\"cpu\"]\n\n\
             [[hosts]]\nname = \"b\"\naddress = \"{address_b}\"\nport = {port_b}\ndevices = [\"cpu\"]\n\n\
             [partition]\nstages = 2\n"
        );
    let path = tmp(test).join("two.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Reads a launcher's first stderr line, `… (run <16 hex>)`, and returns its run directory.
pub fn run_dir_from(stderr: &mut impl std::io::BufRead) -> PathBuf {
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let run = first
        .split("(run ")
        .nth(1)
        .and_then(|s| s.get(..16))
        .unwrap_or_else(|| panic!("no run id in {first:?}"));
    std::env::temp_dir().join(format!("brigade-{run}"))
}

/// Waits (≤ 30 s) until stages `0..stages` have written their pid files in `dir`.
pub fn wait_for_pids(dir: &std::path::Path, stages: usize) -> Vec<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pids: Vec<i32> = (0..stages)
            .filter_map(|k| {
                std::fs::read_to_string(dir.join(format!("stage{k}.pid")))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        if pids.len() == stages {
            return pids;
        }
        assert!(std::time::Instant::now() < deadline, "stages did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A TCP port for one test of this process: below Linux's ephemeral range (32768+), so a
/// connection some other test opens cannot be holding it; distinct `offset`s for tests that
/// run at the same time.
pub fn test_port(offset: u16) -> u16 {
    10_000 + (std::process::id() % 20_000) as u16 + offset
}

/// Parameters by name, as `brigade_engine::params_io::load_dir` reads them.
pub type Params = std::collections::BTreeMap<String, Vec<f32>>;

/// A run's losses and final parameters equal another's (relative 1e-5): what every pipelined
/// run must show against `brigade reference`.
pub fn assert_same(what: &str, got: (&[f64], &Params), want: (&[f64], &Params)) {
    const REL: f64 = 1e-5;
    assert_eq!(got.0.len(), want.0.len(), "{what}: steps");
    for (i, (a, b)) in got.0.iter().zip(want.0).enumerate() {
        assert!(
            ((a - b) / b).abs() <= REL,
            "{what}: step {} loss {a} vs reference {b}",
            i + 1
        );
    }
    assert!(!want.1.is_empty(), "{what}: no parameters to compare");
    assert_eq!(
        got.1.keys().collect::<Vec<_>>(),
        want.1.keys().collect::<Vec<_>>(),
        "{what}: parameter sets"
    );
    for (name, v) in got.1 {
        let d = brigade_stages::params::max_rel_diff(v, &want.1[name]);
        assert!(d <= REL, "{what}: parameter {name} differs by {d:e}");
    }
}

/// Runs `brigade CMD FILE` (`train`, `reference`, …) for `steps` steps with `overrides`, writing
/// metrics and final parameters under `dir` as `name`; returns (losses, parameters).
pub fn run_with_outputs(
    dir: &std::path::Path,
    name: &str,
    cmd: &str,
    file: &str,
    steps: &str,
    overrides: &[String],
) -> (Vec<f64>, Params) {
    let (m, p) = (
        dir.join(format!("{name}.jsonl")),
        dir.join(format!("{name}-params")),
    );
    let mut args = vec![
        cmd,
        file,
        "--steps",
        steps,
        "--metrics",
        m.to_str().unwrap(),
        "--save-params",
        p.to_str().unwrap(),
    ];
    for o in overrides {
        args.extend(["--set", o.as_str()]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "{cmd} {name} failed: {}",
        stderr(&out)
    );
    (losses(&m), brigade_engine::params_io::load_dir(&p).unwrap())
}

/// `hosts=[…]`: one host `local` with `n` CPU devices (a `--set` value).
pub fn hosts(n: usize) -> String {
    let cpus = vec!["\"cpu\""; n].join(",");
    format!(r#"hosts=[{{name="local",address="127.0.0.1",devices=[{cpus}]}}]"#)
}

/// A metrics file's evaluations as (step, val_loss, val_accuracy).
pub fn evals(path: &std::path::Path) -> Vec<(u64, f64, f64)> {
    brigade_engine::metrics::read_eval(path.to_str().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| (e.step, e.val_loss, e.val_accuracy.unwrap()))
        .collect()
}

/// Waits for `child` to exit; fails the test if that takes longer than `limit` (`what` says
/// what was expected).
pub fn exit_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Collects `child`'s stderr on a thread (so a chatty child never blocks on a full pipe).
pub fn collect_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    })
}

/// Starts `brigade ARGS` (a two-rank training job), kills rank 1 once it has trained a little,
/// and checks the job ends within 10 s, non-zero, leaving rank 0 dead too; returns what the
/// launcher printed after its first line.
pub fn kill_rank_1_of(args: &[&str]) -> String {
    let mut child = brigade()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let dir = run_dir_from(&mut err);
    let [p0, p1] = wait_for_pids(&dir, 2)[..] else {
        unreachable!()
    };
    std::thread::sleep(std::time::Duration::from_millis(500)); // let it train a little
    // SAFETY: signalling a process this test started.
    unsafe {
        libc::kill(p1, libc::SIGKILL);
    }
    let status = exit_within(
        &mut child,
        std::time::Duration::from_secs(10),
        "the job did not end within 10 s of a rank dying",
    );
    assert!(!status.success());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!alive(p0), "rank 0 (pid {p0}) was left running");
    let _ = std::fs::remove_dir_all(dir);
    rest
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`, as CI services
/// set it): there a test whose dependency is missing fails instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A test that cannot run here because `missing` is missing (`how`: how to get it): under CI
/// it fails, saying so; elsewhere it returns after a `SKIP` line written straight to stderr —
/// not through `eprintln!`, which `cargo test` captures and shows only for failing tests — so
/// the skip shows in the output of a passing run. Callers return right after.
pub fn skip_or_fail(test: &str, missing: &str, how: &str) {
    if under_ci() {
        panic!(
            "{test}: {missing} is missing and CI is set, so this fails rather than skips: {how}"
        );
    }
    let line = format!("SKIP {test}: {missing} is missing ({how}); CI=true makes this a failure\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// The Python that tests run real ZeroMQ peers with: `$BRIGADE_PYTHON` (`.ci/run` points it at
/// its venv, which has pyzmq), else `python3` on the PATH.
pub fn python() -> String {
    std::env::var("BRIGADE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Whether [`python`] runs `check` (Python code that raises when something is missing).
pub fn python_has(check: &str) -> bool {
    Command::new(python())
        .args(["-c", check])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
