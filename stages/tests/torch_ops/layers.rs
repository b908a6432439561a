//! Every layer kind against PyTorch: forward output, input gradients and parameter gradients
//! for a fixed upstream gradient, through brigade's own dispatch (`LayerKind::init`, `forward`
//! or `merge`) on burn's autodiff flex backend; linear products also with their weight
//! gradients deferred (`WeightGrads`).

use crate::fixture::{Fixture, Tensor, cases, check};
use crate::mapping::{brigade_tensors, entries, to_torch};
use brigade_layers::imp::{Forward, ForwardCtx};
use brigade_layers::products::{self, Deferred};
use brigade_layers::reader::Section;
use brigade_layers::{LayerKind, LayerModule, WeightGrads};
use brigade_stages::Act;
use brigade_stages::params::{LoadValues, NamedParam, named_params};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use serde_json::Value;
use std::collections::HashMap;

/// f32, one pass: brigade and PyTorch round differently (summation order in matmuls and
/// reductions, erf and exp implementations), a few units in the last place of the largest
/// values; 1e-5 of the reference's scale is the aim.
pub const TOL: f64 = 1e-5;

/// Runs every fixture case of layer kind `kind`; returns how many there were.
pub fn check_kind(kind: &str) -> usize {
    let all = cases();
    let mine: Vec<&Value> = all["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|c| c["layer"]["kind"] == kind)
        .collect();
    assert!(!mine.is_empty(), "no fixture case for layer kind {kind}");
    for case in &mine {
        run_case(case);
    }
    mine.len()
}

/// The layer a case's `layer` object describes, parsed as a topology's would be.
fn parse_layer(layer: &Value, inputs: &[Vec<usize>]) -> LayerKind {
    let obj = layer.as_object().expect("layer object");
    let kind = obj["kind"].as_str().expect("kind");
    let table: toml::Table = obj
        .iter()
        .filter(|(k, _)| *k != "kind")
        .map(|(k, v)| {
            let t = match v {
                Value::Bool(b) => toml::Value::Boolean(*b),
                Value::Number(n) if n.is_i64() => toml::Value::Integer(n.as_i64().unwrap()),
                Value::Number(n) => toml::Value::Float(n.as_f64().unwrap()),
                other => panic!("key {k} = {other}"),
            };
            (k.clone(), t)
        })
        .collect();
    let keys = LayerKind::keys(kind).expect("a brigade kind");
    let s = Section::new("cases.json", "layer", &table, keys).unwrap();
    let mut parsed = LayerKind::parse(kind, &s).unwrap().unwrap();
    parsed.settle(inputs);
    parsed
}

fn input_act(t: &Tensor, device: &Device) -> Act {
    if t.int {
        Act::from_tokens(t.i64.clone(), &t.shape, device)
    } else {
        Act::from_f32(t.f32.clone(), &t.shape, device).require_grad()
    }
}

fn float_values(a: &Act) -> (Vec<usize>, Vec<f32>) {
    let v = a.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    (a.dims(), v)
}

/// A case under each way brigade may take its linear products' weight gradients: in the
/// backward, deferred per micro-batch (ZB-H1's W) and batched per step (`[rows, in]` only).
fn run_case(case: &Value) {
    let kind = case["layer"]["kind"].as_str().unwrap();
    let strategies: &[WeightGrads] = match kind {
        "linear" | "transformer_block" => &[
            WeightGrads::InBackward,
            WeightGrads::PerMicrobatch,
            WeightGrads::PerStep,
        ],
        _ => &[WeightGrads::InBackward],
    };
    for &w in strategies {
        check_case(case, w);
    }
}

fn check_case(case: &Value, weights: WeightGrads) {
    let name = match weights {
        WeightGrads::InBackward => case["name"].as_str().unwrap().to_string(),
        w => format!("{} ({w:?})", case["name"].as_str().unwrap()),
    };
    let name = name.as_str();
    let f = Fixture::open(case["file"].as_str().unwrap());
    let device = Device::flex().autodiff();
    let inputs: Vec<&Tensor> = (0..)
        .map(|i| format!("input.{i}"))
        .take_while(|n| f.has(n))
        .map(|n| f.get(&n))
        .collect();
    let samples: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape[1..].to_vec()).collect();
    let kind = parse_layer(&case["layer"], &samples);
    let module = load_params(name, &kind, &f, &samples[0], &device);
    let xs: Vec<Act> = inputs.iter().map(|t| input_act(t, &device)).collect();
    let train = case["train"].as_bool().unwrap_or(false);
    let (out, deferred) = run(&kind, &module, xs.clone(), train, weights);
    let (shape, values) = float_values(&out);
    check(
        &format!("{name}: output"),
        (&shape, &values),
        f.get("output"),
        TOL,
    );
    let g = f.get("grad_output");
    let grads = out
        .dot(&Act::from_f32(g.f32.clone(), &g.shape, &device))
        .backward();
    for (i, x) in xs.iter().enumerate() {
        if let Some(gx) = x.grad(&grads) {
            let (shape, values) = float_values(&gx);
            let want = f.get(&format!("grad_input.{i}"));
            check(
                &format!("{name}: input {i} gradient"),
                (&shape, &values),
                want,
                TOL,
            );
        } else {
            assert!(x.is_tokens(), "{name}: input {i} has no gradient");
        }
    }
    let defers = kind
        .products(&samples[0])
        .iter()
        .any(|p| weights.defers_input(p.sequence));
    assert_eq!(!deferred.is_empty(), defers, "{name}: products deferred");
    let extra = deferred_grads(&module, deferred, &grads);
    check_param_grads(name, &kind, &module, (&grads, &extra), &f);
}

/// The layer on `xs` (a merge on all of them), through brigade's dispatch, its linear products
/// taking their weight gradients by `weights`: the output and the products it deferred.
fn run(
    kind: &LayerKind,
    module: &LayerModule,
    mut xs: Vec<Act>,
    train: bool,
    weights: WeightGrads,
) -> (Act, Vec<Deferred>) {
    if kind.is_merge() {
        return (kind.merge(xs), Vec::new());
    }
    let mut deferred = Vec::new();
    let ctx = ForwardCtx {
        seed: 0,
        step: 0,
        microbatch: 0,
        layer: 0,
        train,
    };
    let mut fwd = Forward {
        ctx,
        weights,
        local: 0,
        deferred: &mut deferred,
    };
    let out = kind.forward(module, xs.swap_remove(0), &mut fwd);
    (out, deferred)
}

/// W of every deferred product (what ZB-H1's W pass and batched weight gradients run), from
/// the output gradients the backward left in `grads`.
fn deferred_grads(
    module: &LayerModule,
    deferred: Vec<Deferred>,
    grads: &Gradients,
) -> Vec<GradientsParams> {
    deferred
        .into_iter()
        .map(|d| {
            let g = d
                .probe_or_grad
                .grad(grads)
                .expect("a product's output gradient");
            let l = module.linear(d.product).expect("the product's linear");
            products::weight_grads(l, l, &d.input, &g)
        })
        .collect()
}

/// The layer's module with the fixture's parameters (every one of them, every brigade
/// parameter given one).
fn load_params(
    name: &str,
    kind: &LayerKind,
    f: &Fixture,
    sample: &[usize],
    device: &Device,
) -> LayerModule {
    let bias = f.has("param.bias");
    let entries = entries(kind.name(), bias);
    let mut used: Vec<String> = entries.iter().map(|e| e.1.clone()).collect();
    used.sort();
    used.dedup();
    assert_eq!(
        used,
        f.suffixes("param."),
        "{name}: the fixture's parameters are not all mapped"
    );
    let values: HashMap<String, NamedParam> = brigade_tensors(f, "param.", &entries)
        .into_iter()
        .map(|(path, t)| {
            let p = NamedParam {
                path: path.clone(),
                shape: t.shape,
                values: t.f32,
            };
            (path, p)
        })
        .collect();
    let module = kind.init(sample, 0, 0, device);
    assert_eq!(
        named_params(&module).len(),
        entries.len(),
        "{name}: brigade's parameters {:?}",
        named_params(&module)
            .iter()
            .map(|p| &p.path)
            .collect::<Vec<_>>()
    );
    let mut loader = LoadValues::new(&values);
    let module = module.map(&mut loader);
    assert!(loader.problems.is_empty(), "{name}: {:?}", loader.problems);
    module
}

/// Each parameter's gradient in `grads`, by path.
struct GradsOf<'a> {
    grads: &'a Gradients,
    /// The weight gradients of deferred products (their parameters were constants in the graph).
    extra: &'a [GradientsParams],
    path: Vec<String>,
    out: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for GradsOf<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<burn::Tensor<D>>) {
        let deferred = || self.extra.iter().find_map(|g| g.get::<D>(param.id));
        if let Some(g) = param.val().grad(self.grads).or_else(deferred) {
            let shape = g.dims().to_vec();
            let values = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            self.out.insert(self.path.join("."), (shape, values));
        }
    }
}

fn check_param_grads(
    name: &str,
    kind: &LayerKind,
    module: &LayerModule,
    (grads, extra): (&Gradients, &[GradientsParams]),
    f: &Fixture,
) {
    let mut v = GradsOf {
        grads,
        extra,
        path: Vec::new(),
        out: HashMap::new(),
    };
    module.visit(&mut v);
    let entries = entries(kind.name(), f.has("param.bias"));
    let brigade = |path: &str| {
        v.out
            .get(path)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no gradient for {path}"))
    };
    for torch in f.suffixes("param.") {
        let (shape, values) = to_torch(&torch, &entries, &brigade);
        let want = f.get(&format!("grad_param.{torch}"));
        let what = format!("{name}: gradient of torch's {torch}");
        check(&what, (&shape, &values), want, TOL);
    }
}
