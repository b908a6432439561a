//! brigade's optimizers (stages/src/optim.rs, burn's SGD and Adam as brigade configures them
//! from a topology's `[train]`) against torch.optim: a few steps of a linear layer's weight and
//! bias with the fixture's gradients, the parameters after each step.

use crate::fixture::{Fixture, cases, check};
use crate::layers::TOL;
use crate::mapping::{brigade_tensors, entries};
use brigade_stages::optim::make_optimizer;
use brigade_stages::params::{LoadValues, NamedParam, named_params};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde_json::Value;
use std::collections::HashMap;

/// A one-layer topology (`linear`, 4 → 3) whose `[train]` holds `train`'s keys.
fn topology(train: &serde_json::Map<String, Value>) -> brigade_partitioner::Topology {
    let keys: String = train
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k} = \"{s}\"\n"),
            Value::Number(n) if n.is_f64() => format!("{k} = {:?}\n", n.as_f64().unwrap()),
            v => format!("{k} = {v}\n"),
        })
        .collect();
    let toml = format!(
        "[model]\ninput = [4]\nlayers = [ {{ kind = \"linear\", out = 3 }} ]\n\
         [train]\nbatch = 1\nmicrobatches = 1\n{keys}\
         [[hosts]]\nname = \"local\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n"
    );
    brigade_partitioner::parse("optim.toml", &toml, &[]).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// Each parameter's id by path.
struct Ids {
    path: Vec<String>,
    out: HashMap<String, ParamId>,
}

impl ModuleVisitor for Ids {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<burn::Tensor<D>>) {
        self.out.insert(self.path.join("."), param.id);
    }
}

fn grads_for<M: Module>(module: &M, f: &Fixture, step: usize) -> GradientsParams {
    let mut ids = Ids {
        path: Vec::new(),
        out: HashMap::new(),
    };
    module.visit(&mut ids);
    let mut grads = GradientsParams::new();
    let device = Device::flex();
    for (path, t) in brigade_tensors(f, &format!("grad.{step}."), &entries("linear", true)) {
        let data = TensorData::new(t.f32, t.shape.clone());
        match t.shape.len() {
            1 => grads.register::<1>(ids.out[&path], Tensor::from_data(data, &device)),
            2 => grads.register::<2>(ids.out[&path], Tensor::from_data(data, &device)),
            r => panic!("a rank-{r} parameter"),
        }
    }
    grads
}

/// Runs the optimizer case `name`; returns the largest error over its steps.
pub fn check_optimizer(name: &str) -> f64 {
    let all = cases();
    let case = all["optimizers"]
        .as_array()
        .expect("optimizers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no optimizer case {name}"));
    let f = Fixture::open(case["file"].as_str().unwrap());
    let train = case["brigade_train"]
        .as_object()
        .expect("a brigade optimizer");
    let topo = topology(train);
    let mut opt = make_optimizer(&topo.train);
    let device = Device::flex().autodiff();
    let layer = &topo.model.graph().layer(0);
    let mut module = layer.kind.init(&layer.input_shape, 0, 0, &device);
    let linear = entries("linear", true);
    let values: HashMap<String, NamedParam> = brigade_tensors(&f, "param.", &linear)
        .into_iter()
        .map(|(path, t)| {
            (
                path.clone(),
                NamedParam {
                    path,
                    shape: t.shape,
                    values: t.f32,
                },
            )
        })
        .collect();
    let mut loader = LoadValues::new(&values);
    module = module.map(&mut loader);
    assert!(loader.problems.is_empty(), "{name}: {:?}", loader.problems);
    let mut worst: f64 = 0.0;
    for step in 0..case["steps"].as_u64().unwrap() as usize {
        let grads = grads_for(&module, &f, step);
        module = opt.step(step as u64, module, grads);
        let got: HashMap<String, NamedParam> = named_params(&module)
            .into_iter()
            .map(|p| (p.path.clone(), p))
            .collect();
        for (path, want) in brigade_tensors(&f, &format!("after.{step}."), &linear) {
            let p = &got[&path];
            let what = format!("{name}: {path} after step {}", step + 1);
            worst = worst.max(check(&what, (&p.shape, &p.values), &want, TOL));
        }
    }
    worst
}
