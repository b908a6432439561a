//! Every kind of bad topology gets a one-paragraph error naming the file, the key and the fix.

use brigade_partitioner::{ConfigError, parse};

const GOOD: &str = r#"
name = "t"
[model]
input = [64]
layers = [ { kind = "linear", out = 128 }, { kind = "relu" }, { kind = "linear", out = 10 } ]
loss = "cross_entropy"
[data]
source = "synthetic"
seed = 7
[train]
steps = 50
batch = 64
microbatches = 8
schedule = "gpipe"
optimizer = "sgd"
lr = 0.05
seed = 42
[[hosts]]
name = "local"
address = "127.0.0.1"
devices = ["cpu", "cpu"]
[partition]
stages = 2
method = "auto"
"#;

fn err(text: &str) -> String {
    match parse("bad.toml", text, &[]) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            let s = e.to_string();
            assert!(
                s.starts_with("bad.toml"),
                "error does not name the file: {s}"
            );
            assert!(!s.contains('\n'), "error is not one paragraph: {s}");
            s
        }
    }
}

fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "fixture lacks {from}");
    GOOD.replacen(from, to, 1)
}

fn set(overrides: &[&str]) -> Result<brigade_partitioner::Topology, ConfigError> {
    parse(
        "bad.toml",
        GOOD,
        &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
}

#[test]
fn the_fixture_is_valid() {
    let t = parse("good.toml", GOOD, &[]).unwrap();
    assert_eq!(t.model.layers.len(), 3);
    assert_eq!(t.train.microbatch_size(), 8);
}

#[test]
fn unknown_key_suggests_the_closest() {
    let e = err(&with("steps = 50", "stpes = 50"));
    assert!(e.contains("train.stpes"), "{e}");
    assert!(e.contains("unknown key"), "{e}");
    assert!(e.contains("Did you mean `steps`?"), "{e}");
    let e = err(&with("[partition]", "[partitoin]"));
    assert!(e.contains("Did you mean `partition`?"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = err(&with("steps = 50", "steps = \"fifty\""));
    assert!(
        e.contains("train.steps") && e.contains("whole number"),
        "{e}"
    );
    let e = err(&with("lr = 0.05", "lr = [1]"));
    assert!(e.contains("train.lr") && e.contains("number"), "{e}");
}

#[test]
fn zero_microbatches() {
    let e = err(&with("microbatches = 8", "microbatches = 0"));
    assert!(
        e.contains("train.microbatches") && e.contains("at least 1"),
        "{e}"
    );
}

#[test]
fn batch_not_divisible_by_microbatches() {
    let e = err(&with("batch = 64", "batch = 60"));
    assert!(
        e.contains("train.batch") && e.contains("not divisible") && e.contains("batch = 64"),
        "{e}"
    );
}

#[test]
fn more_stages_than_layers() {
    let e = err(&with("stages = 2", "stages = 4").replace(
        "devices = [\"cpu\", \"cpu\"]",
        "devices = [\"cpu\", \"cpu\", \"cpu\", \"cpu\"]",
    ));
    assert!(
        e.contains("partition.stages") && e.contains("only 3 layers"),
        "{e}"
    );
}

#[test]
fn more_stages_than_devices() {
    let e = err(&with("stages = 2", "stages = 3"));
    assert!(
        e.contains("partition.stages") && e.contains("2 devices"),
        "{e}"
    );
}

#[test]
fn unknown_device() {
    let e = err(&with(
        "devices = [\"cpu\", \"cpu\"]",
        "devices = [\"cpu\", \"gpu0\"]",
    ));
    assert!(
        e.contains("hosts[0].devices[1]")
            && e.contains("unknown device \"gpu0\"")
            && e.contains("cuda:N"),
        "{e}"
    );
}

#[test]
fn unknown_layer_kind_suggests_the_closest() {
    let e = err(&with("{ kind = \"relu\" }", "{ kind = \"rellu\" }"));
    assert!(
        e.contains("model.layers[1].kind") && e.contains("Did you mean `relu`?"),
        "{e}"
    );
}

#[test]
fn unknown_layer_parameter() {
    let e = err(&with(
        "{ kind = \"linear\", out = 10 }",
        "{ kind = \"linear\", outs = 10 }",
    ));
    assert!(
        e.contains("model.layers[2].outs") && e.contains("Did you mean `out`?"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_names_the_layer() {
    let e = err(&with(
        "{ kind = \"relu\" }",
        "{ kind = \"conv2d\", out = 4, kernel = 3 }",
    ));
    assert!(
        e.contains("model.layers[1]") && e.contains("[channels, height, width]"),
        "{e}"
    );
}

#[test]
fn duplicate_hosts() {
    let text = format!(
        "{GOOD}\n[[hosts]]\nname = \"local\"\naddress = \"127.0.0.2\"\ndevices = [\"cpu\"]\n"
    );
    let e = err(&text);
    assert!(
        e.contains("hosts[1].name") && e.contains("duplicate host \"local\""),
        "{e}"
    );
}

#[test]
fn manual_balance_must_sum_to_the_layer_count() {
    let e = err(&with(
        "method = \"auto\"",
        "method = \"manual\"\nbalance = [1, 1]",
    ));
    assert!(
        e.contains("partition.balance") && e.contains("sums to 2") && e.contains("3 layers"),
        "{e}"
    );
    let e = err(&with("method = \"auto\"", "method = \"manual\""));
    assert!(
        e.contains("partition.balance") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err(&with("steps = 50", "steps = = 50"));
    assert!(e.starts_with("bad.toml:11:9:"), "{e}");
    assert!(e.contains("syntax error"), "{e}");
}

#[test]
fn missing_file() {
    let e = brigade_partitioner::load("no/such/topology.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no/such/topology.toml") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn overrides_apply_and_are_validated() {
    let t = set(&[
        "train.schedule=1f1b",
        "train.steps=7",
        "partition.method=uniform",
    ])
    .unwrap();
    assert_eq!(
        t.train.schedule,
        brigade_partitioner::ScheduleKind::OneFOneB
    );
    assert_eq!(t.train.steps, 7);
    let e = set(&["train.schedule=zigzag"]).unwrap_err().to_string();
    assert!(
        e.contains("train.schedule") && e.contains("\"zigzag\""),
        "{e}"
    );
    let e = set(&["train.microbatches=0"]).unwrap_err().to_string();
    assert!(e.contains("train.microbatches"), "{e}");
    let e = set(&["trainsteps"]).unwrap_err().to_string();
    assert!(
        e.contains("--set trainsteps") && e.contains("section.key=value"),
        "{e}"
    );
}

#[test]
fn profile_with_wrong_layer_count_is_refused() {
    use brigade_partitioner::{Costs, Profile, ProfiledLayer};
    let t = parse("good.toml", GOOD, &[]).unwrap();
    let g = t.model.graph();
    let layer = ProfiledLayer {
        name: "x".into(),
        forward_ms: 1.0,
        backward_ms: 2.0,
        activation_bytes: 4,
        param_bytes: 4,
        at_threads: Vec::new(),
    };
    let profile = Profile {
        layers: vec![layer; 2],
        device_gflops: None,
        microbatch_size: None,
    };
    let e = Costs::from_profile(&t, g, &profile, "p.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.json")
            && e.contains("2 entries")
            && e.contains("3 layers")
            && e.contains("brigade profile"),
        "{e}"
    );
}

#[test]
fn interleaving_needs_its_schedule_enough_layers_and_whole_groups_of_microbatches() {
    // chunks_per_rank without the interleaved schedule.
    let e = set(&["partition.chunks_per_rank=2"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partition.chunks_per_rank") && e.contains("interleaved-1f1b"),
        "{e}"
    );
    // 2 ranks × 2 chunks = 4 chunks of a 3-layer model.
    let e = set(&["train.schedule=interleaved-1f1b"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 chunks") && e.contains("3 layers"), "{e}");
    // One chunk per rank is allowed (it is 1F1B's order) ...
    let t = set(&[
        "train.schedule=interleaved-1f1b",
        "partition.chunks_per_rank=1",
    ])
    .unwrap();
    assert_eq!(t.partition.chunks(), 2);
    // ... but micro-batches must come in groups of the ranks.
    let e = set(&[
        "train.schedule=interleaved-1f1b",
        "partition.chunks_per_rank=1",
        "train.batch=12",
        "train.microbatches=3",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("multiple of the stages"), "{e}");
    // A manual balance lists layers per chunk.
    let e = set(&[
        "train.schedule=interleaved-1f1b",
        "partition.chunks_per_rank=1",
        "partition.method=manual",
        "partition.balance=[1, 1, 1]",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("3 entries for 2 chunks"), "{e}");
    for s in ["zb-h1", "interleaved-1f1b", "1f1b", "gpipe"] {
        assert!(
            brigade_partitioner::ScheduleKind::from_name(s).is_some(),
            "{s}"
        );
    }
}

#[test]
fn recomputation_per_chunk() {
    let t = set(&["train.recompute=[1]"]).unwrap();
    assert!(!t.train.recomputes(0) && t.train.recomputes(1));
    assert!(t.train.recomputes_any());
    let t = set(&["train.recompute=true"]).unwrap();
    assert!(t.train.recomputes(0) && t.train.recomputes(1));
    let e = set(&["train.recompute=[2]"]).unwrap_err().to_string();
    assert!(
        e.contains("train.recompute") && e.contains("chunk 2") && e.contains("2 chunks"),
        "{e}"
    );
    let e = set(&["train.recompute=\"yes\""]).unwrap_err().to_string();
    assert!(
        e.contains("train.recompute") && e.contains("list of chunk ids"),
        "{e}"
    );
}

const LAYERS: &str = r#"layers = [ { kind = "linear", out = 128 }, { kind = "relu" }, { kind = "linear", out = 10 } ]"#;

fn graph(layers: &str) -> String {
    with(LAYERS, &format!("layers = [\n{layers}\n]"))
}

#[test]
fn a_residual_graph_is_read_with_its_inputs_and_keeps_chains_unchanged() {
    let t = parse(
        "ok.toml",
        &graph(
            r#"{ kind = "linear", out = 64, name = "stem" },
               { kind = "relu" },
               { kind = "linear", out = 64 },
               { kind = "add", inputs = ["stem", "linear2"], name = "sum" },
               { kind = "concat", inputs = ["sum", "stem"] },
               { kind = "linear", out = 10, inputs = ["concat4"] }"#,
        ),
        &[],
    )
    .unwrap();
    let m = &t.model;
    assert_eq!(m.sources(3), vec![0, 2]);
    assert_eq!(m.sources(4), vec![3, 0]);
    assert_eq!(
        m.sources(5),
        vec![4],
        "an explicit previous layer is the default"
    );
    assert!(m.layers[5].inputs.is_empty());
    assert!(!m.is_chain());
    let graph = m.graph();
    assert_eq!(
        graph.layer(4).output_shape,
        vec![128],
        "concat along the last dim"
    );
    let chain = parse("ok.toml", GOOD, &[]).unwrap();
    assert!(chain.model.is_chain());
}

#[test]
fn malformed_graphs_name_the_layer_and_the_fix() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{ kind = "linear", out = 8 }, { kind = "relu", inputs = ["relu2"] }, { kind = "relu" }, { kind = "linear", out = 10 }"#,
            &["model.layers[1].inputs", "comes after this layer", "cycle"],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "relu", inputs = ["relu1"] }, { kind = "linear", out = 10 }"#,
            &["model.layers[1].inputs", "takes its own output", "cycle"],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "relu", inputs = ["lnear0"] }, { kind = "linear", out = 10 }"#,
            &[
                "model.layers[1].inputs",
                "no layer is named \"lnear0\"",
                "linear0",
            ],
        ),
        (
            r#"{ kind = "linear", out = 8, name = "a" }, { kind = "linear", out = 9 }, { kind = "add", inputs = ["a", "linear1"] }, { kind = "linear", out = 10 }"#,
            &[
                "model.layers[2]",
                "add needs inputs of one shape",
                "[8] and [9]",
                "model.layers[0] (a)",
            ],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "add" }, { kind = "linear", out = 10 }"#,
            &["model.layers[1].inputs", "needs `inputs`"],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "linear", out = 8 }, { kind = "linear", out = 10, inputs = ["linear1", "linear0"] }"#,
            &["model.layers[2].inputs", "takes one input, got 2", "add"],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "linear", out = 8, inputs = ["linear0"] }, { kind = "linear", out = 10, inputs = ["linear0"] }"#,
            &["model.layers[1]", "taken by no layer"],
        ),
        (
            r#"{ kind = "linear", out = 8 }, { kind = "linear", out = 8 }, { kind = "concat", dim = 3, inputs = ["linear0", "linear1"] }, { kind = "linear", out = 10 }"#,
            &["model.layers[2]", "concat along dim 3"],
        ),
    ];
    for (layers, want) in cases {
        let e = err(&graph(layers));
        for w in *want {
            assert!(e.contains(w), "{e}\nshould contain: {w}");
        }
    }
}

#[test]
fn tied_embeddings_need_an_embedding_and_a_matching_head() {
    // No embedding first.
    let e = err(&with(
        "loss = \"cross_entropy\"",
        "loss = \"cross_entropy\"\ntie_word_embeddings = true",
    ));
    assert!(
        e.contains("model.tie_word_embeddings") && e.contains("needs an embedding"),
        "{e}"
    );
    let lm = |head: &str| {
        with(
            "input = [64]\nlayers = [ { kind = \"linear\", out = 128 }, { kind = \"relu\" }, { kind = \"linear\", out = 10 } ]",
            &format!(
                "input = [8]\ntie_word_embeddings = true\nlayers = [ {{ kind = \"embedding\", vocab = 32, dim = 16 }}, {{ kind = \"relu\" }}, {head} ]"
            ),
        )
    };
    // A head with a bias, or to another width, cannot be the embedding transposed.
    for head in [
        "{ kind = \"linear\", out = 32 }",
        "{ kind = \"linear\", out = 31, bias = false }",
    ] {
        let e = err(&lm(head));
        assert!(
            e.contains("model.tie_word_embeddings") && e.contains("out = 32"),
            "{e}"
        );
    }
    let ok = parse(
        "good.toml",
        &lm("{ kind = \"linear\", out = 32, bias = false }"),
        &[],
    )
    .unwrap();
    assert_eq!(ok.model.tied_layers(), Some((0, 2)));
}

#[test]
fn tracking_needs_an_http_server_and_names() {
    let t = |section: &str| format!("{GOOD}\n[tracking]\n{section}\n");
    let e = err(&t("mlflow = \"mlflow.example:5000\""));
    assert!(
        e.contains("tracking.mlflow") && e.contains("http://"),
        "{e}"
    );
    let e = err(&t("mlflow = \"http://user:secret@mlflow.example\""));
    assert!(
        e.contains("tracking.mlflow") && e.contains("MLFLOW_TRACKING_USERNAME"),
        "{e}"
    );
    let e = err(&t("mlflow = \"http://h:5000\"\nexperiment = \" \""));
    assert!(
        e.contains("tracking.experiment") && e.contains("empty"),
        "{e}"
    );
    let e = err(&t("mlflow = \"http://h:5000\"\nrun = \"x\""));
    assert!(e.contains("tracking.run") && e.contains("run_name"), "{e}");
    let ok = parse(
        "ok.toml",
        &t("mlflow = \"https://h:5000/prefix\"\nexperiment = \"e\"\nrun_name = \"r\""),
        &[],
    )
    .unwrap();
    assert_eq!(ok.tracking.mlflow.as_deref(), Some("https://h:5000/prefix"));
    assert_eq!(ok.tracking.run_name.as_deref(), Some("r"));
}

#[test]
fn threads_per_rank_are_read_and_checked() {
    use brigade_partitioner::topology::Placement;
    let at = |device| Placement { host: 0, device };
    let t = parse(
        "ok.toml",
        &with(
            "devices = [\"cpu\", \"cpu\"]",
            "devices = [\"cpu:4\", { device = \"cpu\", threads = 2 }]",
        ),
        &[],
    )
    .unwrap();
    assert_eq!((t.threads(&at(0)), t.threads(&at(1))), (4, 2));
    let t = set(&["partition.threads=3"]).unwrap();
    assert_eq!(t.threads_stated(&at(1)), Some(3));
    assert_eq!(set(&[]).unwrap().threads_stated(&at(0)), None);
    let t = set(&["partition.threads=auto"]).unwrap();
    assert!(t.partition.threads_auto && t.partition.threads.is_none());
    for (devices, key, what) in [
        (
            "[\"cpu:0\", \"cpu\"]",
            "hosts[0].devices[0]",
            "unknown device \"cpu:0\"",
        ),
        ("[\"cpu:x\", \"cpu\"]", "hosts[0].devices[0]", "cpu:T"),
        (
            "[{ device = \"cpu:2\", threads = 3 }, \"cpu\"]",
            "hosts[0].devices[0].threads",
            "says 2",
        ),
        (
            "[{ device = \"cuda:0\", threads = 3 }, \"cpu\"]",
            "hosts[0].devices[0].threads",
            "GPU",
        ),
        (
            "[{ device = \"cpu\", threads = 0 }, \"cpu\"]",
            "hosts[0].devices[0].threads",
            "",
        ),
    ] {
        let e = err(&with(
            "devices = [\"cpu\", \"cpu\"]",
            &format!("devices = {devices}"),
        ));
        assert!(e.contains(key) && e.contains(what), "{devices}: {e}");
    }
    let e = set(&["partition.threads=0"]).unwrap_err().to_string();
    assert!(e.contains("partition.threads"), "{e}");
}

#[test]
fn a_bucket_size_must_be_a_positive_size() {
    for bad in ["0", "-1", "\"big\""] {
        let e = err(&with(
            "method = \"auto\"",
            &format!("method = \"auto\"\nbucket_mb = {bad}"),
        ));
        assert!(e.contains("bucket_mb"), "{e}");
    }
    let t = set(&["partition.bucket_mb=0.5"]).unwrap();
    assert_eq!(t.partition.bucket_bytes(), 512 * 1024);
    assert_eq!(set(&[]).unwrap().partition.bucket_mb, 25.0);
}
