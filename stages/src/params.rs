//! Reading a module's parameters out as named f32 vectors (for comparisons, checkpoints and
//! the wire), in the module's visit order.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// One parameter tensor: its path inside the layer (e.g. `linear.weight`), shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedParam {
    pub path: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

struct Collector {
    path: Vec<String>,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 parameter");
        self.out.push(NamedParam {
            path: self.path.join("."),
            shape,
            values,
        });
    }
}

/// Every float parameter of `module` with its path.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut c = Collector {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// `max |a - b| / max |b|`: the largest difference relative to the reference's scale.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(f64::MIN_POSITIVE)
    }
}
