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

/// The id of layer `layer`'s parameter at `path`: the same in every process and every split,
/// so optimizer state saved by one split can be loaded by another (FNV-1a, 64 bit).
pub fn param_id(layer: usize, path: &str) -> burn::module::ParamId {
    burn::module::ParamId::from(param_id_value(layer, path))
}

/// [`param_id`] as the number optimizer records carry.
pub fn param_id_value(layer: usize, path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in (layer as u64).to_le_bytes().iter().chain(path.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Gives every parameter of layer `layer` its [`param_id`].
pub struct AssignIds {
    pub layer: usize,
    path: Vec<String>,
}

impl AssignIds {
    pub fn new(layer: usize) -> Self {
        AssignIds {
            layer,
            path: Vec::new(),
        }
    }
}

impl burn::module::ModuleMapper for AssignIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(param_id(self.layer, &self.path.join(".")), tensor, mapper)
    }
}

/// Replaces parameter values by those in `values` (keyed by path), keeping ids; records paths
/// it did not find or whose shape differs.
pub struct LoadValues<'a> {
    path: Vec<String>,
    values: &'a std::collections::HashMap<String, NamedParam>,
    pub problems: Vec<String>,
}

impl<'a> LoadValues<'a> {
    pub fn new(values: &'a std::collections::HashMap<String, NamedParam>) -> Self {
        LoadValues {
            path: Vec::new(),
            values,
            problems: Vec::new(),
        }
    }
}

impl burn::module::ModuleMapper for LoadValues<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims().to_vec();
        match self.values.get(&path) {
            Some(p) if p.shape == dims => {
                let t = Tensor::<D>::from_data(
                    TensorData::new(p.values.clone(), dims),
                    &tensor.device(),
                )
                .require_grad();
                Param::from_mapped_value(id, t, mapper)
            }
            Some(p) => {
                self.problems.push(format!(
                    "{path}: shape {:?} in the checkpoint, {dims:?} in the model",
                    p.shape
                ));
                Param::from_mapped_value(id, tensor, mapper)
            }
            None => {
                self.problems
                    .push(format!("{path}: missing from the checkpoint"));
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// Moves the gradients of `module`'s parameters out of `all` (a stage's accumulated gradients)
/// into a set of their own, for a per-layer optimizer step.
pub fn take_grads<M: Module>(
    module: &M,
    all: &mut burn::optim::GradientsParams,
) -> burn::optim::GradientsParams {
    struct Take<'a> {
        from: &'a mut burn::optim::GradientsParams,
        to: burn::optim::GradientsParams,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(param.id) {
                self.to.register::<D>(param.id, g);
            }
        }
    }
    let mut t = Take {
        from: all,
        to: burn::optim::GradientsParams::new(),
    };
    module.visit(&mut t);
    t.to
}
