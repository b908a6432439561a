//! Graphs, not just chains: a residual MLP, a small U-Net and a transformer with a long skip,
//! each on 2, 3 and 4 ranks under GPipe and 1F1B, equal `brigade reference`; a skip tensor goes
//! from the rank that makes it straight to the rank that takes it.

mod common;

use common::*;

/// A small U-Net on 8×8 images: two conv/pool levels down, a bottom convolution, and two
/// nearest-neighbour upsamplings back up, each level's feature map concatenated (along channels)
/// to the decoder's, as U-Net's skip connections do.
const UNET: &str = r#"
name = "unet"
[model]
input = [1, 8, 8]
layers = [
  { kind = "conv2d", out = 4, kernel = 3, padding = 1, name = "enc1" },
  { kind = "relu", name = "act1" },
  { kind = "max_pool2d", kernel = 2 },
  { kind = "conv2d", out = 8, kernel = 3, padding = 1, name = "enc2" },
  { kind = "relu", name = "act2" },
  { kind = "max_pool2d", kernel = 2 },
  { kind = "conv2d", out = 8, kernel = 3, padding = 1, name = "bottom" },
  { kind = "relu" },
  { kind = "upsample2d", scale = 2, name = "up2" },
  { kind = "concat", inputs = ["up2", "act2"], dim = 0 },
  { kind = "conv2d", out = 8, kernel = 3, padding = 1, name = "dec2" },
  { kind = "relu" },
  { kind = "upsample2d", scale = 2, name = "up1" },
  { kind = "concat", inputs = ["up1", "act1"], dim = 0 },
  { kind = "conv2d", out = 4, kernel = 3, padding = 1, name = "dec1" },
  { kind = "relu" },
  { kind = "flatten" },
  { kind = "linear", out = 10 },
]
loss = "cross_entropy"
[data]
source = "synthetic"
seed = 5
[train]
steps = 12
batch = 16
microbatches = 4
schedule = "gpipe"
optimizer = "adam"
lr = 0.01
seed = 9
[[hosts]]
name = "local"
address = "127.0.0.1"
devices = ["cpu", "cpu", "cpu", "cpu"]
[partition]
stages = 2
"#;

/// A transformer language model whose head takes the embedding again (a long skip over every
/// block). SGD: attention's key bias gets only rounding noise as its gradient (softmax ignores
/// it), and Adam would turn that noise into steps of `lr` — the embedding's gradient sums inside
/// the first block are not added in one order by every split (docs/topology.md#graphs).
const TRANSFORMER: &str = r#"
name = "long-skip-lm"
[model]
input = [8]
layers = [
  { kind = "embedding", vocab = 16, dim = 16, name = "embed" },
  { kind = "transformer_block", heads = 2, ff = 32 },
  { kind = "transformer_block", heads = 2, ff = 32 },
  { kind = "transformer_block", heads = 2, ff = 32, name = "top" },
  { kind = "add", inputs = ["embed", "top"] },
  { kind = "layer_norm" },
  { kind = "linear", out = 16 },
]
loss = "cross_entropy"
[data]
source = "synthetic"
seed = 3
[train]
steps = 8
batch = 8
microbatches = 4
schedule = "gpipe"
optimizer = "sgd"
lr = 0.1
seed = 11
[[hosts]]
name = "local"
address = "127.0.0.1"
devices = ["cpu", "cpu", "cpu", "cpu"]
[partition]
stages = 2
"#;

/// The residual MLP of topologies/residual-mlp.toml (digits data), for `steps` steps.
fn residual(steps: usize) -> String {
    let root = format!(
        "{}/..",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    std::fs::read_to_string(format!("{root}/topologies/residual-mlp.toml"))
        .unwrap()
        .replace("\"../data/", &format!("\"{root}/data/"))
        .replace("steps = 200", &format!("steps = {steps}"))
}

/// Every split (2, 3, 4 ranks) and schedule (GPipe, 1F1B) of `text` equals the reference.
fn equals_reference_on_every_split(name: &str, text: &str) {
    let dir = tmp(&format!("graph-{name}"));
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let steps = text
        .lines()
        .find_map(|l| l.strip_prefix("steps = "))
        .unwrap()
        .to_string();
    let want = run_with_outputs(&dir, "ref", "reference", file, &steps, &[]);
    for stages in [2, 3, 4] {
        for schedule in ["gpipe", "1f1b"] {
            let run = format!("{stages}-{schedule}");
            let overrides = [
                format!("partition.stages={stages}"),
                format!("train.schedule={schedule}"),
            ];
            let got = run_with_outputs(&dir, &run, "train", file, &steps, &overrides);
            assert_same(
                &format!("{name} on {run}"),
                (&got.0, &got.1),
                (&want.0, &want.1),
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_residual_mlp_equals_the_reference_on_every_split() {
    equals_reference_on_every_split("residual", &residual(60));
}

#[test]
fn a_small_unet_equals_the_reference_on_every_split() {
    equals_reference_on_every_split("unet", UNET);
}

#[test]
fn a_transformer_with_a_long_skip_equals_the_reference_on_every_split() {
    equals_reference_on_every_split("transformer", TRANSFORMER);
}

/// The residual MLP on 3 ranks: the planner puts the stem on rank 0 and the head on rank 2, so
/// the stem's output crosses on its own edge from rank 0 to rank 2. The trace shows it sent by
/// rank 0 to rank 2 once per micro-batch (and its gradient back), and rank 1 never touches it.
#[test]
fn a_skip_tensor_goes_straight_from_its_producer_to_its_consumer() {
    let dir = tmp("graph-trace");
    let file = dir.join("residual.toml");
    std::fs::write(&file, residual(3)).unwrap();
    let file = file.to_str().unwrap();
    let plan = dir.join("job.json");
    let out = run(&["plan", file, "--out", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("chunk 0 (rank 0) → chunk 2 (rank 2)")
            && text.contains("skip: the output of stem, sent straight there"),
        "{text}"
    );
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let skip = job["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from_chunk"] == 0 && e["to_chunk"] == 2 && e["layer"] == 0)
        .unwrap_or_else(|| panic!("no skip edge in {}", job["edges"]))["id"]
        .as_u64()
        .unwrap();
    let trace = dir.join("trace.json");
    let out = run(&[
        "train",
        plan.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let on_skip: Vec<&serde_json::Value> = t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["args"]["edge"].as_u64() == Some(skip))
        .collect();
    let sends = |pid: u64, peer: u64| {
        on_skip
            .iter()
            .filter(|e| e["name"] == "send" && e["pid"] == pid && e["args"]["peer"] == peer)
            .count()
    };
    let microbatches = 3 * 8;
    assert_eq!(sends(0, 2), microbatches, "activations: rank 0 → rank 2");
    assert_eq!(sends(2, 0), microbatches, "gradients: rank 2 → rank 0");
    assert!(
        on_skip.iter().all(|e| e["pid"] != 1),
        "rank 1 relayed the skip tensor"
    );
    let training = on_skip.iter().filter(|e| e["name"] == "send").count();
    assert_eq!(
        training,
        2 * microbatches,
        "training sends on the skip edge"
    );
    // Validation activations take the same edge, also straight from rank 0 to rank 2.
    assert!(
        on_skip
            .iter()
            .filter(|e| e["name"] == "send_eval")
            .all(|e| e["pid"] == 0 && e["args"]["peer"] == 2)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_graphs_are_bad_input() {
    let dir = tmp("graph-bad");
    for (what, from, to, needle) in [
        (
            "cycle",
            r#"{ kind = "upsample2d", scale = 2, name = "up2" },"#,
            r#"{ kind = "upsample2d", scale = 2, name = "up2", inputs = ["relu11"] },"#,
            "comes after this layer",
        ),
        (
            "unknown input",
            r#"inputs = ["up2", "act2"]"#,
            r#"inputs = ["up2", "act3"]"#,
            "no layer is named \"act3\"",
        ),
        (
            "shape mismatch at add",
            r#"{ kind = "concat", inputs = ["up2", "act2"], dim = 0 },"#,
            r#"{ kind = "add", inputs = ["up2", "act1"] },"#,
            "add needs inputs of one shape",
        ),
    ] {
        assert!(UNET.contains(from), "{what}");
        let file = dir.join("bad.toml");
        std::fs::write(&file, UNET.replace(from, to)).unwrap();
        let out = run(&["plan", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{what}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{what}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
