//! The transformer block: pre-norm causal multi-head self-attention and a GELU MLP, each
//! wrapped in a residual: `x + attn(ln1(x))`, then `h + mlp(ln2(h))`.

use crate::init::uniform;
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use rand_chacha::ChaCha8Rng;

#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub ln1: LayerNorm,
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    pub ln2: LayerNorm,
    pub up: Linear,
    pub down: Linear,
    pub heads: usize,
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

impl TransformerBlock {
    pub fn new(rng: &mut ChaCha8Rng, dim: usize, heads: usize, ff: usize, device: &Device) -> Self {
        TransformerBlock {
            ln1: layer_norm(dim, 1e-5, device),
            query: linear(rng, dim, dim, true, device),
            key: linear(rng, dim, dim, true, device),
            value: linear(rng, dim, dim, true, device),
            out: linear(rng, dim, dim, true, device),
            ln2: layer_norm(dim, 1e-5, device),
            up: linear(rng, dim, ff, true, device),
            down: linear(rng, ff, dim, true, device),
            heads,
        }
    }

    /// `x`: `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = x.clone() + self.attention(self.ln1.forward(x));
        let m = self
            .down
            .forward(gelu(self.up.forward(self.ln2.forward(h.clone()))));
        h + m
    }

    fn attention(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let dh = d / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, dh]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
        // The mask in the scores' dtype (in f16 its -1e9 becomes -inf, which softmax takes).
        let mask = causal_mask(t, &self.query.weight.device()).cast(scores.dtype());
        let probs = softmax(scores + mask, 3);
        let ctx = probs.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.out.forward(ctx)
    }
}

/// `[1, 1, t, t]` with 0 where a token may attend (itself and earlier) and a large negative
/// number above the diagonal.
fn causal_mask(t: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, vec![1, 1, t, t]), device)
}
