//! Random text and random TOML structures never make the topology loader panic: it returns a
//! topology or an error. Valid results also plan without panicking.

use brigade_partitioner::{Costs, parse, plan};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(2),
            Just(3),
            Just(8),
            Just(64),
            Just(1 << 24),
            Just(1 << 40),
            Just(-1)
        ]
        .prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() {
            format!("{f:e}")
        } else {
            "nan".into()
        }),
        Just("inf".to_string()),
        "[a-z0-9:_]{0,8}".prop_map(|s| format!("\"{s}\"")),
        prop_oneof![
            Just("\"cpu\""),
            Just("\"cuda:0\""),
            Just("\"gpipe\""),
            Just("\"1f1b\""),
            Just("\"adam\""),
            Just("\"manual\""),
            Just("\"16GiB\"")
        ]
        .prop_map(str::to_string),
        any::<bool>().prop_map(|b| b.to_string()),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(", ")))
    })
}

/// Mostly plausible values for `key` (so many topologies are valid and get planned), sometimes
/// anything at all.
fn for_key(key: &'static str) -> BoxedStrategy<String> {
    let plausible: BoxedStrategy<String> = match key {
        "p" | "momentum" | "beta1" | "lr" | "eps" => {
            (0.0f64..1.0).prop_map(|f| format!("{f}")).boxed()
        }
        "schedule" => prop::sample::select(vec!["\"gpipe\"", "\"1f1b\""])
            .prop_map(str::to_string)
            .boxed(),
        "optimizer" => prop::sample::select(vec!["\"sgd\"", "\"adam\""])
            .prop_map(str::to_string)
            .boxed(),
        "method" => prop::sample::select(vec![
            "\"auto\"",
            "\"uniform\"",
            "\"parameters\"",
            "\"manual\"",
        ])
        .prop_map(str::to_string)
        .boxed(),
        "balance" => prop::collection::vec(1usize..4, 1..4)
            .prop_map(|v| format!("{v:?}"))
            .boxed(),
        "bias" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "padding" => (0usize..3).prop_map(|v| v.to_string()).boxed(),
        "stages" | "microbatches" => (1usize..3).prop_map(|v| v.to_string()).boxed(),
        _ => (1usize..9).prop_map(|v| v.to_string()).boxed(),
    };
    prop_oneof![12 => plausible, 1 => value()].boxed()
}

fn layer() -> impl Strategy<Value = String> {
    let kinds: Vec<(&'static str, Vec<&'static str>)> = vec![
        ("linear", vec!["out", "bias"]),
        ("linear", vec!["out"]),
        ("linear", vec!["out"]),
        ("linear", vec!["out"]),
        ("relu", vec![]),
        ("relu", vec![]),
        ("dropout", vec!["p"]),
        ("gelu", vec![]),
        ("tanh", vec![]),
        ("sigmoid", vec![]),
        ("layer_norm", vec![]),
        ("dropout", vec!["p"]),
        ("conv2d", vec!["out", "kernel", "stride", "padding"]),
        ("max_pool2d", vec!["kernel", "stride"]),
        ("avg_pool2d", vec!["kernel"]),
        ("flatten", vec![]),
        ("embedding", vec!["vocab", "dim"]),
        ("transformer_block", vec!["heads", "ff"]),
        ("bogus", vec!["out"]),
    ];
    prop::sample::select(kinds).prop_flat_map(|(kind, keys)| {
        let vals: Vec<BoxedStrategy<String>> = keys.iter().map(|k| for_key(k)).collect();
        (Just(kind), Just(keys), vals).prop_map(|(kind, keys, vals)| {
            let mut s = format!("{{ kind = \"{kind}\"");
            for (k, v) in keys.iter().zip(vals) {
                s.push_str(&format!(", {k} = {v}"));
            }
            s + " }"
        })
    })
}

fn section(keys: Vec<&'static str>) -> impl Strategy<Value = String> {
    let n = keys.len();
    prop::sample::subsequence(keys, 0..=n).prop_flat_map(|ks| {
        let vals: Vec<BoxedStrategy<String>> = ks.iter().map(|k| for_key(k)).collect();
        (Just(ks), vals).prop_map(|(ks, vals)| {
            ks.iter()
                .zip(vals)
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        })
    })
}

/// A model whose layers fit together (MLP, CNN or LM), with occasional odd values.
fn coherent_model() -> impl Strategy<Value = (String, String)> {
    let act = prop::sample::select(vec![
        "{ kind = \"relu\" }",
        "{ kind = \"gelu\" }",
        "{ kind = \"tanh\" }",
        "{ kind = \"sigmoid\" }",
        "{ kind = \"layer_norm\" }",
        "{ kind = \"dropout\", p = 0.1 }",
    ]);
    let mlp = (
        1usize..64,
        prop::collection::vec((for_key("out"), act.clone()), 1..5),
    )
        .prop_map(|(input, ls)| {
            let layers: Vec<String> = ls
                .into_iter()
                .flat_map(|(o, a)| [format!("{{ kind = \"linear\", out = {o} }}"), a.to_string()])
                .collect();
            (format!("[{input}]"), layers.join(", "))
        });
    let cnn = (1usize..4, 4usize..17, for_key("out"), for_key("kernel"), for_key("out")).prop_map(|(c, hw, o, k, classes)| {
        (
            format!("[{c}, {hw}, {hw}]"),
            format!("{{ kind = \"conv2d\", out = {o}, kernel = {k}, padding = 1 }}, {{ kind = \"relu\" }}, {{ kind = \"max_pool2d\", kernel = 2 }}, {{ kind = \"flatten\" }}, {{ kind = \"linear\", out = {classes} }}"),
        )
    });
    let lm = (
        1usize..16,
        1usize..5,
        prop::sample::select(vec![4usize, 8, 12]),
        for_key("ff"),
    )
        .prop_map(|(t, blocks, d, ff)| {
            let mut layers = vec![format!("{{ kind = \"embedding\", vocab = 16, dim = {d} }}")];
            layers.extend(
                (0..blocks)
                    .map(|_| format!("{{ kind = \"transformer_block\", heads = 4, ff = {ff} }}")),
            );
            layers.push("{ kind = \"linear\", out = 16 }".to_string());
            (format!("[{t}]"), layers.join(", "))
        });
    prop_oneof![mlp, cnn, lm]
}

fn topology() -> impl Strategy<Value = String> {
    prop_oneof![1 => chaotic_topology().boxed(), 2 => coherent_topology().boxed()]
}

fn coherent_topology() -> impl Strategy<Value = String> {
    (
        coherent_model(),
        section(vec!["steps", "batch", "microbatches", "schedule", "optimizer", "lr", "seed"]),
        section(vec!["stages", "method"]),
        1usize..4,
    )
        .prop_map(|((input, layers), train, part, devices)| {
            format!(
                "[model]\ninput = {input}\nlayers = [{layers}]\n[train]\n{train}[[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\ndevices = [{}]\n[partition]\n{part}",
                vec!["\"cpu\""; devices].join(", ")
            )
        })
}

fn chaotic_topology() -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => prop::collection::vec(1usize..12, 1..2), 1 => prop::collection::vec(1usize..12, 1..4)],
        prop::collection::vec(layer(), 1..6),
        section(vec!["steps", "batch", "microbatches", "schedule", "optimizer", "lr", "seed", "momentum", "beta1", "eps"]),
        section(vec!["stages", "method", "balance"]),
        prop::collection::vec(prop_oneof![4 => Just("\"cpu\"".to_string()), 1 => value()], 0..4),
        prop_oneof![4 => Just("29500".to_string()), 1 => value()],
    )
        .prop_map(|(input, layers, train, part, devices, port)| {
            format!(
                "[model]\ninput = {input:?}\nlayers = [{}]\n[train]\n{train}[[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\nport = {port}\ndevices = [{}]\n[partition]\n{part}",
                layers.join(", "),
                devices.join(", ")
            )
        })
}

fn exercise(text: &str) {
    if let Ok(topo) = parse("fuzz.toml", text, &[]) {
        let graph = topo.model.graph();
        let costs = Costs::estimate(graph, topo.train.microbatch_size());
        let live = vec![topo.train.microbatches as u64; topo.partition.stages];
        let _ = plan::plan(&topo, graph, &costs, &live);
        let _ = plan::alternatives(&plan::problem(&topo, &costs, &live));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        exercise(&text);
    }

    #[test]
    fn random_topologies_never_panic(text in topology()) {
        exercise(&text);
    }
}

#[test]
fn the_generator_makes_valid_topologies_too() {
    // Without valid ones the planner would never be exercised by the tests above.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let valid = (0..500)
        .filter(|_| {
            let text = topology().new_tree(&mut runner).unwrap().current();
            parse("fuzz.toml", &text, &[]).is_ok()
        })
        .count();
    assert!(
        valid >= 100,
        "only {valid} of 500 generated topologies were valid"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_overrides_never_panic(key in "[a-z.\\[\\]0-9]{0,20}", v in value()) {
        let text = std::fs::read_to_string(format!("{}/../topologies/quickstart.toml", std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))).unwrap();
        let _ = parse("fuzz.toml", &text, &[format!("{key}={v}")]);
    }
}
