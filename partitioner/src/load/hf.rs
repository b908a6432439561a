//! `[model] hf = "DIR"`: a Llama read from a Hugging Face checkpoint directory — embedding,
//! one `llama_block` per decoder layer, the final `rms_norm` and the head — trained on `seq`
//! tokens per sample with next-token cross-entropy.

use crate::LayerKind;
use crate::error::ConfigError;
use crate::hf::{HfModel, LlamaConfig, names, tensors};
use crate::layers::kinds::{
    embedding::Embedding, linear::Linear, llama_block::LlamaBlock, rms_norm::RmsNorm,
};
use crate::model::{Layer, Loss, Model};
use crate::reader::Section;
use std::path::{Path, PathBuf};

pub(super) fn model(s: &Section, base: &str) -> Result<Model, ConfigError> {
    for key in ["input", "layers", "loss"] {
        if s.get(key).is_some() {
            return Err(s.err(key, "is given with model.hf, which defines the model", "Remove it: the layers come from DIR/config.json, the loss is next-token cross-entropy."));
        }
    }
    let dir = resolve(base, s.req_str("hf", "\"checkpoints/llama\"")?);
    let config_path = dir.join("config.json");
    let config_file = config_path.display().to_string();
    let json = tensors::read_json(&config_path)?;
    let config = LlamaConfig::parse(&config_file, &json)?;
    let seq = s.req_u64("seq", "128")?;
    let seq = s.positive("seq", seq, "It is the number of tokens per sample.")?;
    if seq > config.max_position_embeddings {
        return Err(s.err(
            "seq",
            format!(
                "{seq} is above the model's max_position_embeddings = {}",
                config.max_position_embeddings
            ),
            "Train on sequences the model was made for.",
        ));
    }
    let mut names = names::llama(&config);
    tensors::assign(&dir, &mut names, &tensors::list(&dir)?)?;
    if s.get("tie_word_embeddings").is_some() {
        return Err(s.err(
            "tie_word_embeddings",
            "is given with model.hf, whose config.json says whether the head is tied",
            "Remove it: brigade follows the checkpoint's tie_word_embeddings.",
        ));
    }
    let mut m = Model::new(vec![seq], layers(&config), Loss::CrossEntropy);
    m.tie_word_embeddings = config.tie_word_embeddings;
    m.hf = Some(HfModel {
        dir: dir.display().to_string(),
        config_json: json,
        config,
        names,
    });
    Ok(m)
}

/// `dir` relative to the topology file's folder.
fn resolve(file: &str, dir: &str) -> PathBuf {
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    base.join(dir)
}

fn layers(c: &LlamaConfig) -> Vec<Layer> {
    let layer = |name: String, kind| Layer {
        name,
        kind,
        inputs: vec![],
    };
    let block = LlamaBlock {
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        ff: c.intermediate_size,
        eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        rope_scaling: c.rope_scaling.clone(),
    };
    let mut out = vec![layer(
        "embed_tokens".into(),
        LayerKind::Embedding(Embedding {
            vocab: c.vocab_size,
            dim: c.hidden_size,
        }),
    )];
    out.extend(
        (0..c.num_hidden_layers)
            .map(|i| layer(format!("block{i}"), LayerKind::LlamaBlock(block.clone()))),
    );
    out.push(layer(
        "norm".into(),
        LayerKind::RmsNorm(RmsNorm {
            eps: c.rms_norm_eps,
        }),
    ));
    out.push(layer(
        "lm_head".into(),
        LayerKind::Linear(Linear {
            out: c.vocab_size,
            bias: false,
        }),
    ));
    out
}
