//! The Llama block on burn, op for op as transformers' eager `LlamaDecoderLayer` (f32): RMS
//! norms, rotary embeddings in the `rotate_half` layout, key/value heads repeated for grouped
//! queries, scores scaled by `head_dim^-½`, a causal mask, softmax, SwiGLU. Its linears run
//! through [`Forward::linear3`], so ZB-H1's W and batched weight gradients reach them.

use super::{LlamaBlock, rope};
use crate::act::Act;
use crate::imp::{Forward, LayerImpl, causal_mask, linear, rms_norm};
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use rand_chacha::ChaCha8Rng;

/// The block's parameters, named as in a Hugging Face Llama layer (saved under `llama.<field>`).
#[derive(Module, Debug)]
pub struct Llama {
    pub input_layernorm: RmsNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: RmsNorm,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl LayerImpl for LlamaBlock {
    type Module = Llama;

    fn init(&self, input: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Llama {
        let (d, kv, ff) = (input[1], self.kv_dim(input[1]), self.ff);
        Llama {
            input_layernorm: rms_norm(d, self.eps, device),
            q_proj: linear(rng, d, d, false, device),
            k_proj: linear(rng, d, kv, false, device),
            v_proj: linear(rng, d, kv, false, device),
            o_proj: linear(rng, d, d, false, device),
            post_attention_layernorm: rms_norm(d, self.eps, device),
            gate_proj: linear(rng, d, ff, false, device),
            up_proj: linear(rng, d, ff, false, device),
            down_proj: linear(rng, ff, d, false, device),
        }
    }

    fn forward(&self, m: &Llama, x: Act, f: &mut Forward) -> Act {
        let Act::F3(x) = x else {
            panic!("llama_block on {:?}", x.dims())
        };
        let h = x.clone() + self.attention(m, m.input_layernorm.forward(x), f);
        let n = m.post_attention_layernorm.forward(h.clone());
        let gate = f.linear3("gate_proj", &m.gate_proj, n.clone());
        let up = f.linear3("up_proj", &m.up_proj, n);
        Act::F3(h + f.linear3("down_proj", &m.down_proj, silu(gate) * up))
    }

    fn linear<'m>(m: &'m Llama, name: &str) -> Option<&'m Linear> {
        Some(match name {
            "q_proj" => &m.q_proj,
            "k_proj" => &m.k_proj,
            "v_proj" => &m.v_proj,
            "o_proj" => &m.o_proj,
            "gate_proj" => &m.gate_proj,
            "up_proj" => &m.up_proj,
            "down_proj" => &m.down_proj,
            _ => return None,
        })
    }
}

impl LlamaBlock {
    fn attention(&self, m: &Llama, x: Tensor<3>, f: &mut Forward) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let dh = d / self.heads;
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, dh]).swap_dims(1, 2);
        let q = heads(f.linear3("q_proj", &m.q_proj, x.clone()), self.heads);
        let k = heads(f.linear3("k_proj", &m.k_proj, x.clone()), self.kv_heads);
        let v = heads(f.linear3("v_proj", &m.v_proj, x), self.kv_heads);
        let (cos, sin) = self.rotation(t, dh, q.dtype(), &q.device());
        let q = rotate(q, cos.clone(), sin.clone());
        let k = repeat_kv(rotate(k, cos, sin), self.heads / self.kv_heads);
        let v = repeat_kv(v, self.heads / self.kv_heads);
        let scores = q.matmul(k.swap_dims(2, 3)) * (dh as f64).powf(-0.5);
        // The mask in the scores' dtype (in f16 its -1e9 becomes -inf, which softmax takes).
        let mask = causal_mask(t, &scores.device()).cast(scores.dtype());
        let probs = softmax(scores + mask, 3);
        let ctx = probs.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        f.linear3("o_proj", &m.o_proj, ctx)
    }

    /// `[1, 1, t, dh]` cosines and sines of every position's rotation.
    fn rotation(&self, t: usize, dh: usize, dtype: burn::tensor::DType, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let freqs = rope::inv_freq(dh, self.rope_theta, self.rope_scaling.as_ref());
        let (cos, sin) = rope::tables(t, &freqs);
        let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, vec![1, 1, t, dh]), device).cast(dtype);
        (table(cos), table(sin))
    }
}

/// `x·cos + rotate_half(x)·sin`, where `rotate_half([x1, x2]) = [-x2, x1]` over the head's halves.
fn rotate(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let (x1, x2) = (x.clone().narrow(3, 0, half), x.clone().narrow(3, half, half));
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// Each of the `[b, kv_heads, t, dh]` heads repeated `n` times in place (query head `j` reads
/// key/value head `j / n`, as transformers' `repeat_kv`).
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, kv, t, dh] = x.dims();
    x.reshape([b, kv, 1, t, dh])
        .expand([b, kv, n, t, dh])
        .reshape([b, kv * n, t, dh])
}
