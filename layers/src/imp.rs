//! The burn half of a layer kind: its parameters, its initialisation and its forward, and the
//! context a forward runs in.

use crate::act::Act;
use crate::def::Kind;
use crate::init::uniform;
use crate::products::{self, Deferred};
use crate::strategy::WeightGrads;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// A kind's implementation on burn.
pub trait LayerImpl: Kind {
    /// Its parameters (a burn module; the registry line names the path they are saved under).
    type Module: Module + Clone + std::fmt::Debug;
    /// Its parameters for one sample of shape `input`, drawn from `rng` (keyed by seed and
    /// layer index, so any split draws the same).
    fn init(&self, input: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Self::Module;
    /// The layer on `x` (shapes were validated with the topology: a mismatch is a bug).
    fn forward(&self, m: &Self::Module, x: Act, f: &mut Forward) -> Act;
    /// A merge layer on its inputs, in the order its `inputs` lists them.
    fn merge(&self, _inputs: Vec<Act>) -> Act {
        panic!("{} is not a merge layer", Self::NAME)
    }
    /// Its linear product `name` (one of `LayerDef::products`), for W.
    fn linear<'m>(_m: &'m Self::Module, _name: &str) -> Option<&'m Linear> {
        None
    }
}

/// The parameters of a parameter-free kind.
#[derive(Module, Debug, Default)]
pub struct NoParams {}

/// Where a forward happens, for the randomness that must not depend on the split.
#[derive(Debug, Clone, Copy)]
pub struct ForwardCtx {
    pub seed: u64,
    pub step: u64,
    pub microbatch: u64,
    /// Global layer index.
    pub layer: u64,
    /// Dropout is active only in training.
    pub train: bool,
}

/// One layer's forward: where it happens, and how its linear products take their weight
/// gradients.
pub struct Forward<'a> {
    pub ctx: ForwardCtx,
    /// [`WeightGrads::InBackward`] outside training.
    pub weights: WeightGrads,
    /// The layer's index within its stage (what a deferred product is filed under).
    pub local: usize,
    /// The products this forward deferred.
    pub deferred: &'a mut Vec<Deferred>,
}

impl Forward<'_> {
    /// The layer's linear product `name`: `l` on `x` (`[rows, in]` or `[batch, tokens, in]`).
    pub fn linear(&mut self, name: &'static str, l: &Linear, x: Act) -> Act {
        if !self.weights.defers_input(matches!(x, Act::F3(_))) {
            return match x {
                Act::F2(t) => Act::F2(crate::fused::linear(l, t)),
                Act::F3(t) => Act::F3(crate::fused::linear(l, t)),
                other => panic!("linear on {:?}", other.dims()),
            };
        }
        let (y, d) = match (self.weights, &x) {
            (WeightGrads::PerStep, Act::F2(_)) => {
                products::forward_transposed(l, x, self.local, name)
            }
            _ => products::forward(l, x, self.local, name),
        };
        self.deferred.push(d);
        y
    }

    /// [`Forward::linear`] on `[batch, tokens, in]`.
    pub fn linear3(&mut self, name: &'static str, l: &Linear, x: Tensor<3>) -> Tensor<3> {
        match self.linear(name, l, Act::F3(x)) {
            Act::F3(y) => y,
            other => panic!("linear on tokens gave {:?}", other.dims()),
        }
    }
}

/// A linear layer with weights uniform in ±1/√fan_in, drawn from `rng`.
pub fn linear(
    rng: &mut ChaCha8Rng,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &Device,
) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    let bound = 1.0 / (d_in as f32).sqrt();
    l.weight = Param::from_tensor(uniform(rng, [d_in, d_out], bound, device));
    if bias {
        l.bias = Some(Param::from_tensor(uniform(rng, [d_out], bound, device)));
    }
    l
}

/// A layer norm over `d` with unit scale and zero shift (deterministic by construction).
pub fn layer_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// An RMS norm over `d` with unit scale (deterministic by construction).
pub fn rms_norm(d: usize, eps: f64, device: &Device) -> RmsNorm {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}
