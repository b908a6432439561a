//! The Llama block on burn, op for op as transformers' eager `LlamaDecoderLayer` (f32): RMS
//! norms, rotary embeddings in the `rotate_half` layout, grouped queries (each key/value head's
//! group of query heads as one product), scores scaled by `head_dim^-½`, a causal mask, softmax,
//! SwiGLU (norms, rotation, masked softmax and SwiGLU fused on flex, [`crate::fused`]). Its linears run
//! through [`Forward::linear3`], so ZB-H1's W and batched weight gradients reach them.

use super::{LlamaBlock, rope};
use crate::act::Act;
use crate::fused::{apply_rms_norm, causal_softmax, matmul, rotate_half, swiglu};
use crate::imp::{Forward, LayerImpl, linear, rms_norm};
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::DType;
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
        let h = x.clone() + self.attention(m, apply_rms_norm(&m.input_layernorm, x), f);
        let n = apply_rms_norm(&m.post_attention_layernorm, h.clone());
        let gate = f.linear3("gate_proj", &m.gate_proj, n.clone());
        let up = f.linear3("up_proj", &m.up_proj, n);
        Act::F3(h + f.linear3("down_proj", &m.down_proj, swiglu(gate, up)))
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
        let (h, kv) = (self.heads, self.kv_heads);
        let (dh, n) = (d / h, h / kv);
        let heads = |y: Tensor<3>, h: usize| y.reshape([b, t, h, dh]).swap_dims(1, 2);
        let q = heads(f.linear3("q_proj", &m.q_proj, x.clone()), h);
        let k = heads(f.linear3("k_proj", &m.k_proj, x.clone()), kv);
        let v = heads(f.linear3("v_proj", &m.v_proj, x), kv);
        let [cos, sin] = self.rotation(t, dh, q.dtype(), &q.device());
        let (q, k) = (rotate_half(q, cos.clone(), sin.clone()), rotate_half(k, cos, sin));
        // Query heads j·n .. (j+1)·n read key/value head j (transformers' `repeat_kv`): as one
        // product per key/value head over the group's n·t query rows, so the keys and values are
        // neither copied n times nor their gradients summed back.
        let q = q.reshape([b, kv, n * t, dh]);
        let scores = matmul(q, k.swap_dims(2, 3)).reshape([b, h, t, t]);
        let probs = causal_softmax(scores, (dh as f64).powf(-0.5));
        let ctx = matmul(probs.reshape([b, kv, n * t, t]), v);
        let ctx = ctx.reshape([b, h, t, dh]).swap_dims(1, 2).reshape([b, t, d]);
        f.linear3("o_proj", &m.o_proj, ctx)
    }

    /// `[t, dh]` cosines and sines of every position's rotation.
    fn rotation(&self, t: usize, dh: usize, dtype: DType, device: &Device) -> [Tensor<2>; 2] {
        let freqs = rope::inv_freq(dh, self.rope_theta, self.rope_scaling.as_ref());
        let (cos, sin) = rope::tables(t, &freqs);
        [cos, sin].map(|v| Tensor::<2>::from_data(TensorData::new(v, vec![t, dh]), device).cast(dtype))
    }
}
