//! What a layer kind is, without burn: its name and keys, how it is parsed and validated from a
//! topology, its output shape and its estimated cost.
//!
//! Costs are per *sample*: the planner multiplies by the micro-batch size. Forward FLOPs count
//! a multiply-add as two; backward is taken as twice the forward (the usual estimate for
//! dense layers: one product for the input gradient, one for the weight gradient).

use crate::error::ConfigError;
use crate::reader::{MAX_DIM, Section};
use serde::Serialize;

/// Bytes per element of an activation on the wire and in memory (f32).
pub const ACT_BYTES: u64 = 4;
/// Bytes per element of a token id input (i64).
pub const TOKEN_BYTES: u64 = 8;

/// Estimated cost of one layer for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LayerCost {
    /// Trainable parameters.
    pub params: u64,
    /// Forward FLOPs per sample.
    pub forward_flops: f64,
    /// Bytes of the layer's output per sample (what crosses a cut after it).
    pub activation_bytes: u64,
    /// Bytes the layer keeps alive per sample until its backward (its output and internals).
    pub saved_bytes: u64,
}

/// One linear product `y = x·W (+ b)` inside a layer, for one sample: the products whose
/// weight gradients an execution strategy may take out of the backward
/// ([`crate::strategy::WeightGrads`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Product {
    /// Its name inside the layer (the burn half finds the module by it).
    pub name: &'static str,
    /// Rows of `x` per sample (tokens for a sequence, 1 for a feature vector).
    pub rows: u64,
    pub d_in: u64,
    pub d_out: u64,
    /// Whether `x` has a token dimension (`[batch, tokens, in]`) rather than `[batch, in]`.
    pub sequence: bool,
}

impl Product {
    /// A product over `tokens` rows of a sequence (a block's projection).
    pub fn on_tokens(name: &'static str, tokens: u64, d_in: u64, d_out: u64) -> Product {
        Product {
            name,
            rows: tokens,
            d_in,
            d_out,
            sequence: true,
        }
    }

    /// Forward FLOPs per sample.
    pub fn flops(&self) -> f64 {
        2.0 * (self.rows * self.d_in * self.d_out) as f64
    }

    /// Elements of its input and output gradient per sample (what a deferred W keeps).
    pub fn kept_elements(&self) -> u64 {
        self.rows * (self.d_in + self.d_out)
    }
}

/// A layer kind's parsing, as associated items (the registry calls them by kind name).
pub trait Kind: LayerDef + Sized {
    /// The `kind = "..."` name.
    const NAME: &'static str;
    /// The keys it accepts besides `kind`, `name` and `inputs`.
    const KEYS: &'static [&'static str] = &[];
    /// Reads and validates the layer's keys (unknown keys were refused already).
    fn parse(s: &Section) -> Result<Self, ConfigError>;
}

/// What every layer answers about itself once parsed (object-safe: [`crate::LayerKind`]
/// dispatches to it).
pub trait LayerDef {
    /// The output shape for one sample of shape `input`, or why this layer cannot take it.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String>;
    /// Estimated cost for one sample of shape `input` (already validated) giving `output`.
    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost;
    /// Whether the layer merges several inputs (`add`, `concat`).
    fn is_merge(&self) -> bool {
        false
    }
    /// A merge layer's output shape for inputs of shapes `inputs`, or why it cannot take them.
    fn merge_shape(&self, _inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        Err("not a merge layer".into())
    }
    /// Settles defaults that depend on the input shapes (concat's `dim`).
    fn settle(&mut self, _inputs: &[Vec<usize>]) {}
    /// `Some(vocabulary size)` for a layer reading token ids (it must come first, and the
    /// model's input and data are then token sequences).
    fn token_vocab(&self) -> Option<usize> {
        None
    }
    /// Its linear products for one sample of shape `input`.
    fn products(&self, _input: &[usize]) -> Vec<Product> {
        Vec::new()
    }
}

/// A required layer dimension (at least 1).
pub fn dim(s: &Section, key: &str, example: &str) -> Result<usize, ConfigError> {
    let v = s.req_u64(key, example)?;
    s.positive(key, v, "A layer dimension must be at least 1.")
}

/// An optional layer dimension (at least 1), `default` when absent.
pub fn dim_or(s: &Section, key: &str, default: u64) -> Result<usize, ConfigError> {
    let v = s.u64_or(key, default)?;
    s.positive(key, v, "It must be at least 1.")
}

/// An optional count that may be 0, capped at [`MAX_DIM`].
pub fn count_or(s: &Section, key: &str, default: u64) -> Result<usize, ConfigError> {
    Ok(s.u64_or(key, default)?.min(MAX_DIM) as usize)
}

/// A small positive float such as a norm's epsilon, `default` when absent.
pub fn epsilon(s: &Section, key: &str, default: f64) -> Result<f64, ConfigError> {
    let eps = s.opt_f64(key)?.unwrap_or(default);
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(s.err(
            key,
            format!("must be a small positive number, found {eps}"),
            format!("Use e.g. {default:e}."),
        ));
    }
    Ok(eps)
}

/// Elements of one sample of `shape`.
pub fn elements(shape: &[usize]) -> u64 {
    shape.iter().product::<usize>() as u64
}

/// An element-wise layer's cost: `flops_per` FLOPs per output element, `saved` bytes kept.
pub fn elementwise(output: &[usize], flops_per: f64, saved: u64) -> LayerCost {
    let n_out = elements(output);
    LayerCost {
        params: 0,
        forward_flops: flops_per * n_out as f64,
        activation_bytes: n_out * ACT_BYTES,
        saved_bytes: saved,
    }
}

/// The bytes of one sample's output of `shape` (an activation kept for backward).
pub fn act_bytes(shape: &[usize]) -> u64 {
    elements(shape) * ACT_BYTES
}

/// `input` unchanged, if it has at least one dimension.
pub fn same_shape(input: &[usize], kind: &str) -> Result<Vec<usize>, String> {
    if input.is_empty() {
        Err(format!("{kind} needs an input with at least one dimension"))
    } else {
        Ok(input.to_vec())
    }
}

/// An image shape `[channels, height, width]`.
pub fn chw(input: &[usize], kind: &str) -> Result<[usize; 3], String> {
    match input {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(format!(
            "{kind} takes an image shaped [channels, height, width], got {input:?}"
        )),
    }
}

/// Positions of a `kernel`-wide window moved by `stride` over `size`.
pub fn window_out(size: usize, kernel: usize, stride: usize, kind: &str) -> Result<usize, String> {
    if kernel > size {
        return Err(format!(
            "{kind}: kernel {kernel} is larger than the (padded) input size {size}"
        ));
    }
    Ok((size - kernel) / stride + 1)
}
