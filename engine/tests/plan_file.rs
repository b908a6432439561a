//! The job plan as an artifact: `plan --out` writes it, `train`, `stage` and `simulate` run
//! exactly that split and placement, and a corrupt, foreign or mismatched plan is bad input.

mod common;

use brigade_engine::params_io::load_dir;
use common::*;
use std::path::Path;
use std::process::Stdio;

const QUICKSTART: &str = "topologies/quickstart.toml";

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "brigade {args:?} failed: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plan_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn chunk_ranges(plan: &serde_json::Value) -> Vec<(u64, u64)> {
    plan["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["layers"][0].as_u64().unwrap(),
                c["layers"][1].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The reference's losses and parameters for `steps` steps of the quickstart.
fn reference(dir: &Path, steps: &str) -> (Vec<f64>, Params) {
    run_with_outputs(dir, "ref", "reference", QUICKSTART, steps, &[])
}

/// Layer indices of the parameters in one `--save-params` file.
fn layers_in(file: &Path) -> Vec<u64> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut layers: Vec<u64> = st
        .names()
        .iter()
        .map(|n| n.split('.').nth(1).unwrap().parse().unwrap())
        .collect();
    layers.sort();
    layers.dedup();
    layers
}

#[test]
fn profiled_plan_file_trains_exactly_its_split() {
    let dir = tmp("plan-profiled");
    let profile = dir.join("profile.json");
    ok(&["profile", QUICKSTART, "--out", profile.to_str().unwrap()]);
    // Make the measured costs favour a split the estimates would not choose: layers 0..4 cost
    // 1603 ms, layers 4..6 1204 ms, and any other cut is worse.
    let mut p = plan_json(&profile);
    for (layer, ms) in [1000.0, 1.0, 2.0, 600.0, 4.0, 1200.0].iter().enumerate() {
        p["layers"][layer]["forward_ms"] = serde_json::json!(ms);
        p["layers"][layer]["backward_ms"] = serde_json::json!(ms);
    }
    write_json(&profile, &p);
    let estimated = dir.join("estimated.json");
    ok(&["plan", QUICKSTART, "--out", estimated.to_str().unwrap()]);
    let job = dir.join("job.json");
    let text = ok(&[
        "plan",
        QUICKSTART,
        "--profile",
        profile.to_str().unwrap(),
        "--out",
        job.to_str().unwrap(),
    ]);
    assert!(text.contains("profiled costs"), "{text}");
    let plan = plan_json(&job);
    assert_eq!(chunk_ranges(&plan), vec![(0, 4), (4, 6)]);
    assert_ne!(chunk_ranges(&plan_json(&estimated)), chunk_ranges(&plan));
    assert_eq!(plan["format"], "brigade-job-plan");
    assert_eq!(plan["edges"][0]["shape"], serde_json::json!([8, 128]));
    assert_eq!(plan["edges"][0]["max_bytes"], 8 * 128 * 4);

    // `simulate` explains the plan file's split, not a new one.
    let sim = ok(&["simulate", job.to_str().unwrap()]);
    assert!(sim.contains("2 ranks"), "{sim}");

    let (tm, tp) = (dir.join("train.jsonl"), dir.join("train-params"));
    ok(&[
        "train",
        job.to_str().unwrap(),
        "--steps",
        "5",
        "--metrics",
        tm.to_str().unwrap(),
        "--save-params",
        tp.to_str().unwrap(),
    ]);
    // Each rank held the plan's layers: chunk 0 has linear 0 and linear 3, chunk 1 linear 5.
    assert_eq!(layers_in(&tp.join("stage-0.safetensors")), vec![0, 3]);
    assert_eq!(layers_in(&tp.join("stage-1.safetensors")), vec![5]);
    let (rl, rp) = reference(&dir, "5");
    assert_same(
        "profiled plan",
        (&losses(&tm), &load_dir(&tp).unwrap()),
        (&rl, &rp),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hand_edited_plan_with_swapped_ranks_trains_and_equals_reference() {
    let dir = tmp("plan-swapped");
    let job = dir.join("job.json");
    ok(&["plan", QUICKSTART, "--out", job.to_str().unwrap()]);
    let mut plan = plan_json(&job);
    // Chunk 0 on rank 1 and chunk 1 on rank 0; an edited plan drops its job hash.
    plan["ranks"][0]["chunks"] = serde_json::json!([1]);
    plan["ranks"][1]["chunks"] = serde_json::json!([0]);
    plan.as_object_mut().unwrap().remove("job_hash");
    let swapped = dir.join("swapped.json");
    write_json(&swapped, &plan);
    let ranges = chunk_ranges(&plan);

    // Real rank processes: each says which chunk it holds, and rank 0 (the last chunk) reports
    // the losses.
    let tp = dir.join("stage-params");
    let spawn = |rank: &str| {
        brigade()
            .args([
                "stage",
                swapped.to_str().unwrap(),
                "--rank",
                rank,
                "--steps",
                "5",
                "--run-id",
                "swapped-ranks-test",
                "--save-params",
                tp.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("0"), spawn("1"));
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success(), "rank 0: {}", stderr(&oa));
    assert!(ob.status.success(), "rank 1: {}", stderr(&ob));
    let events = |o: &std::process::Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (ea, eb) = (events(&oa), events(&ob));
    assert_eq!(ea[0]["event"], "started");
    assert_eq!(ea[0]["chunks"], serde_json::json!([1]));
    assert_eq!(
        ea[0]["layers"],
        serde_json::json!([ranges[1].0, ranges[1].1])
    );
    assert_eq!(eb[0]["chunks"], serde_json::json!([0]));
    assert_eq!(ea[0]["job_hash"], eb[0]["job_hash"]);
    let rank0_losses: Vec<f64> = ea
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert!(
        eb.iter()
            .filter(|e| e["event"] == "step")
            .all(|e| e["loss"].is_null()),
        "rank 1 holds chunk 0 and has no loss"
    );
    let (rl, rp) = reference(&dir, "5");
    // `reference` takes the plan file too (its topology; the reference does not split).
    let rm2 = dir.join("ref-from-plan.jsonl");
    ok(&[
        "reference",
        swapped.to_str().unwrap(),
        "--steps",
        "5",
        "--metrics",
        rm2.to_str().unwrap(),
    ]);
    assert_eq!(losses(&rm2), rl);
    assert_same(
        "swapped ranks (stage processes)",
        (&rank0_losses, &load_dir(&tp).unwrap()),
        (&rl, &rp),
    );

    // The embedded launcher follows the same plan (metrics from rank 0 this time).
    let (tm, tp2) = (dir.join("train.jsonl"), dir.join("train-params"));
    ok(&[
        "train",
        swapped.to_str().unwrap(),
        "--steps",
        "5",
        "--metrics",
        tm.to_str().unwrap(),
        "--save-params",
        tp2.to_str().unwrap(),
    ]);
    assert_same(
        "swapped ranks (train)",
        (&losses(&tm), &load_dir(&tp2).unwrap()),
        (&rl, &rp),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `train FILE` and returns its stderr, asserting exit code 2.
fn bad_input(args: &[&str]) -> String {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn corrupt_foreign_and_edited_plans_are_bad_input() {
    let dir = tmp("plan-bad");
    let job = dir.join("job.json");
    ok(&["plan", QUICKSTART, "--out", job.to_str().unwrap()]);
    let text = std::fs::read_to_string(&job).unwrap();
    let plan = plan_json(&job);
    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    };
    let edited = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = plan.clone();
        f(&mut v);
        write(name, &serde_json::to_string_pretty(&v).unwrap())
    };

    let truncated = write("truncated.json", &text[..text.len() / 2]);
    let err = bad_input(&["train", &truncated]);
    assert!(
        err.contains(&truncated) && err.contains("not valid JSON"),
        "{err}"
    );

    let older = edited("older.json", &|v| v["brigade_version"] = "0.0.1".into());
    let err = bad_input(&["train", &older]);
    assert!(
        err.contains(&older)
            && err.contains("written by brigade 0.0.1")
            && err.contains("brigade plan"),
        "{err}"
    );
    let future = edited("future.json", &|v| v["version"] = 99.into());
    let err = bad_input(&["stage", &future, "--stage", "0"]);
    assert!(err.contains("plan format 99"), "{err}");

    let changed = edited("changed.json", &|v| {
        v["chunks"][0]["layers"][1] = 2.into();
        v["chunks"][1]["layers"][0] = 2.into();
    });
    let err = bad_input(&["train", &changed]);
    assert!(
        err.contains("job_hash") && err.contains("delete the job_hash"),
        "{err}"
    );

    let gap = edited("gap.json", &|v| {
        v.as_object_mut().unwrap().remove("job_hash");
        v["chunks"][1]["layers"][0] = 4.into();
    });
    let err = bad_input(&["train", &gap]);
    assert!(
        err.contains("chunks[1].layers") && err.contains(&gap),
        "{err}"
    );

    let twice = edited("twice.json", &|v| {
        v.as_object_mut().unwrap().remove("job_hash");
        v["ranks"][1]["chunks"] = serde_json::json!([0]);
    });
    let err = bad_input(&["train", &twice]);
    assert!(
        err.contains("ranks[1].chunks") && err.contains("also held by rank 0"),
        "{err}"
    );

    let nowhere = edited("nowhere.json", &|v| {
        v.as_object_mut().unwrap().remove("job_hash");
        v["ranks"][0]["host"] = "lokal".into();
    });
    let err = bad_input(&["train", &nowhere]);
    assert!(
        err.contains("ranks[0].host") && err.contains("Did you mean `local`"),
        "{err}"
    );

    let other_json = write("other.json", r#"{"layers": []}"#);
    let err = bad_input(&["simulate", &other_json]);
    assert!(err.contains("not a brigade job plan"), "{err}");

    let neither = write("neither.txt", "this is = not [ a topology");
    let err = bad_input(&["train", &neither]);
    assert!(
        err.contains("expected a topology in TOML, or a job plan"),
        "{err}"
    );

    let err = bad_input(&["train", job.to_str().unwrap(), "--set", "train.lr=0.5"]);
    assert!(
        err.contains("--set") && err.contains("brigade plan"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_given_different_plans_refuse_each_other() {
    let dir = tmp("plan-mismatch");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    ok(&["plan", QUICKSTART, "--out", a.to_str().unwrap()]);
    let mut other = plan_json(&a);
    other["chunks"][0]["layers"][1] = 2.into();
    other["chunks"][1]["layers"][0] = 2.into();
    other["chunks"][0]["output_shape"] = serde_json::json!([8, 128]);
    other["chunks"][1]["input_shape"] = serde_json::json!([8, 128]);
    other.as_object_mut().unwrap().remove("job_hash");
    write_json(&b, &other);
    let spawn = |file: &Path, rank: &str| {
        brigade()
            .args([
                "stage",
                file.to_str().unwrap(),
                "--stage",
                rank,
                "--steps",
                "5",
                "--run-id",
                "00000000000000dd",
                "--connect-timeout",
                "20",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = std::time::Instant::now();
    let (p0, p1) = (spawn(&a, "0"), spawn(&b, "1"));
    let (o0, o1) = (
        p0.wait_with_output().unwrap(),
        p1.wait_with_output().unwrap(),
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    assert!(!o0.status.success() && !o1.status.success());
    let (e0, e1) = (stderr(&o0), stderr(&o1));
    // At least one rank saw the other's hello: exit 2, naming its own plan file.
    let named = [(o0.status.code(), &e0, &a), (o1.status.code(), &e1, &b)]
        .iter()
        .any(|(code, err, file)| {
            *code == Some(2)
                && err.contains(file.to_str().unwrap())
                && err.contains("different job plan")
        });
    assert!(named, "rank 0:\n{e0}\nrank 1:\n{e1}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn interleaved_plans_give_each_rank_its_chunks_and_check_them() {
    let dir = tmp("plan-interleaved");
    let job = dir.join("job.json");
    ok(&[
        "plan",
        QUICKSTART,
        "--set",
        "train.schedule=interleaved-1f1b",
        "--out",
        job.to_str().unwrap(),
    ]);
    let plan = plan_json(&job);
    assert_eq!(plan["schedule"], "interleaved-1f1b");
    assert_eq!(plan["chunks"].as_array().unwrap().len(), 4);
    assert_eq!(plan["ranks"][0]["chunks"], serde_json::json!([0, 2]));
    assert_eq!(plan["ranks"][1]["chunks"], serde_json::json!([1, 3]));
    // Edges 0→1, 1→2, 2→3 all cross between the two ranks.
    assert_eq!(plan["edges"].as_array().unwrap().len(), 3);
    // The plan file trains what the reference trains.
    let (metrics, params) = (dir.join("m.jsonl"), dir.join("p"));
    ok(&[
        "train",
        job.to_str().unwrap(),
        "--steps",
        "4",
        "--metrics",
        metrics.to_str().unwrap(),
        "--save-params",
        params.to_str().unwrap(),
    ]);
    let (rl, rp) = reference(&dir, "4");
    let got = load_dir(&params).unwrap();
    assert_same(
        "interleaved plan file",
        (&losses(&metrics), &got),
        (&rl, &rp),
    );

    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = plan.clone();
        v.as_object_mut().unwrap().remove("job_hash");
        f(&mut v);
        let p = dir.join(name);
        write_json(&p, &v);
        p.to_str().unwrap().to_string()
    };
    let adjacent = edit("adjacent.json", &|v| {
        v["ranks"][0]["chunks"] = serde_json::json!([0, 1]);
        v["ranks"][1]["chunks"] = serde_json::json!([2, 3]);
    });
    let err = bad_input(&["train", &adjacent]);
    assert!(
        err.contains("ranks[0].chunks") && err.contains("chunk c on rank c mod 2"),
        "{err}"
    );
    let two_on_gpipe = edit("gpipe.json", &|v| {
        v["schedule"] = "gpipe".into();
        v["topology"]["overrides"] = serde_json::json!(["train.schedule=gpipe"]);
    });
    let err = bad_input(&["train", &two_on_gpipe]);
    assert!(
        err.contains("ranks[0].chunks") && err.contains("one chunk per rank"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
