//! Which Hugging Face tensor each brigade parameter is, for a Llama built from a config:
//! `embedding, llama_block × N, rms_norm, linear` (layers 0, 1…N, N+1, N+2). burn keeps a
//! linear's weight as `[in, out]`, Hugging Face as `[out, in]`: those are transposed both ways.

use super::LlamaConfig;
use serde::Serialize;

/// One brigade parameter and the Hugging Face tensor it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HfName {
    /// The brigade layer holding it.
    pub layer: usize,
    /// Its path inside the layer (`llama.q_proj.weight`), as checkpoints name it.
    pub path: String,
    /// Its Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub hf: String,
    /// Its shape in the Hugging Face file.
    pub hf_shape: Vec<usize>,
    /// Stored transposed (`[out, in]`) there.
    pub transposed: bool,
    /// The safetensors file holding it (set once the checkpoint's files are read).
    pub file: String,
}

fn name(layer: usize, path: &str, hf: String, hf_shape: Vec<usize>, transposed: bool) -> HfName {
    HfName {
        layer,
        path: path.to_string(),
        hf,
        hf_shape,
        transposed,
        file: String::new(),
    }
}

/// Every parameter of the Llama `c` describes. With tied embeddings the head reads
/// `model.embed_tokens.weight` too.
pub fn llama(c: &LlamaConfig) -> Vec<HfName> {
    let (v, d, f, n) = (
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
    );
    let kv = d / c.num_attention_heads * c.num_key_value_heads;
    let mut out = vec![name(
        0,
        "embedding.weight",
        "model.embed_tokens.weight".into(),
        vec![v, d],
        false,
    )];
    for i in 0..n {
        let p = format!("model.layers.{i}");
        let norm =
            |path: &str, hf: &str| name(i + 1, path, format!("{p}.{hf}.weight"), vec![d], false);
        let lin = |path: &str, hf: &str, o: usize, inp: usize| {
            name(i + 1, path, format!("{p}.{hf}.weight"), vec![o, inp], true)
        };
        out.extend([
            norm("llama.input_layernorm.gamma", "input_layernorm"),
            lin("llama.q_proj.weight", "self_attn.q_proj", d, d),
            lin("llama.k_proj.weight", "self_attn.k_proj", kv, d),
            lin("llama.v_proj.weight", "self_attn.v_proj", kv, d),
            lin("llama.o_proj.weight", "self_attn.o_proj", d, d),
            norm(
                "llama.post_attention_layernorm.gamma",
                "post_attention_layernorm",
            ),
            lin("llama.gate_proj.weight", "mlp.gate_proj", f, d),
            lin("llama.up_proj.weight", "mlp.up_proj", f, d),
            lin("llama.down_proj.weight", "mlp.down_proj", d, f),
        ]);
    }
    out.push(name(
        n + 1,
        "rms_norm.gamma",
        "model.norm.weight".into(),
        vec![d],
        false,
    ));
    let head = if c.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    out.push(name(n + 2, "linear.weight", head.into(), vec![v, d], true));
    out
}
