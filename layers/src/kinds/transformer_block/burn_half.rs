//! The block on burn. Its linears run through [`Forward::linear3`], so a strategy that defers
//! weight gradients (ZB-H1's W, batched weight gradients) reaches them.

use super::TransformerBlock;
use crate::act::Act;
use crate::fused::{causal_softmax, matmul};
use crate::imp::{Forward, LayerImpl, layer_norm, linear};
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use rand_chacha::ChaCha8Rng;

/// The block's parameters (saved under `block.<field>`).
#[derive(Module, Debug)]
pub struct Block {
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

impl LayerImpl for TransformerBlock {
    type Module = Block;

    fn init(&self, input: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Block {
        let (dim, ff) = (input[1], self.ff);
        Block {
            ln1: layer_norm(dim, 1e-5, device),
            query: linear(rng, dim, dim, true, device),
            key: linear(rng, dim, dim, true, device),
            value: linear(rng, dim, dim, true, device),
            out: linear(rng, dim, dim, true, device),
            ln2: layer_norm(dim, 1e-5, device),
            up: linear(rng, dim, ff, true, device),
            down: linear(rng, ff, dim, true, device),
            heads: self.heads,
        }
    }

    fn forward(&self, m: &Block, x: Act, f: &mut Forward) -> Act {
        let Act::F3(x) = x else {
            panic!("transformer_block on {:?}", x.dims())
        };
        let h = x.clone() + attention(m, m.ln1.forward(x), f);
        let up = f.linear3("up", &m.up, m.ln2.forward(h.clone()));
        Act::F3(h + f.linear3("down", &m.down, gelu(up)))
    }

    fn linear<'m>(m: &'m Block, name: &str) -> Option<&'m Linear> {
        Some(match name {
            "query" => &m.query,
            "key" => &m.key,
            "value" => &m.value,
            "out" => &m.out,
            "up" => &m.up,
            "down" => &m.down,
            _ => return None,
        })
    }
}

fn attention(m: &Block, x: Tensor<3>, f: &mut Forward) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let dh = d / m.heads;
    let split = |y: Tensor<3>| y.reshape([b, t, m.heads, dh]).swap_dims(1, 2);
    let q = split(f.linear3("query", &m.query, x.clone()));
    let k = split(f.linear3("key", &m.key, x.clone()));
    let v = split(f.linear3("value", &m.value, x));
    let probs = causal_softmax(matmul(q, k.swap_dims(2, 3)), 1.0 / (dh as f64).sqrt());
    let ctx = matmul(probs, v).swap_dims(1, 2).reshape([b, t, d]);
    f.linear3("out", &m.out, ctx)
}
