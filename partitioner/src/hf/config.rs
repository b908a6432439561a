//! config.json of a Llama checkpoint, validated: what brigade cannot compute exactly (biases,
//! another activation or rope scaling, a head size that is not hidden / heads) is refused,
//! naming the field — never approximated.

use crate::error::ConfigError;
use crate::layers::kinds::llama_block::RopeScaling;
use serde::Serialize;
use serde_json::Value;

/// The fields of a `LlamaConfig` brigade builds a model from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

struct Fields<'a> {
    file: &'a str,
    json: &'a serde_json::Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl std::fmt::Display, fix: &str) -> ConfigError {
        ConfigError::invalid(self.file, field, message, fix)
    }

    fn count(&self, field: &str) -> Result<usize, ConfigError> {
        self.opt_count(field)?.ok_or_else(|| {
            self.err(
                field,
                "is missing",
                "A LlamaConfig has it; is this a Llama checkpoint's config.json?",
            )
        })
    }

    fn opt_count(&self, field: &str) -> Result<Option<usize>, ConfigError> {
        match self.json.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= crate::reader::MAX_DIM => Ok(Some(n as usize)),
                _ => Err(self.err(
                    field,
                    format!("must be a positive integer, found {v}"),
                    "Fix config.json.",
                )),
            },
        }
    }

    fn number(&self, field: &str, default: f64) -> Result<f64, ConfigError> {
        match self.json.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    self.err(
                        field,
                        format!("must be a positive number, found {v}"),
                        "Fix config.json.",
                    )
                }),
        }
    }

    fn flag(&self, field: &str, default: bool) -> Result<bool, ConfigError> {
        match self.json.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(
                field,
                format!("must be true or false, found {v}"),
                "Fix config.json.",
            )),
        }
    }
}

impl LlamaConfig {
    /// Reads `json` (the contents of `file`).
    pub fn parse(file: &str, json: &Value) -> Result<LlamaConfig, ConfigError> {
        let Some(map) = json.as_object() else {
            return Err(ConfigError::invalid(
                file,
                "(top level)",
                "is not a JSON object",
                "Point model.hf at a Hugging Face model directory.",
            ));
        };
        let f = Fields { file, json: map };
        refuse_unrepresentable(&f)?;
        let heads = f.count("num_attention_heads")?;
        let hidden = f.count("hidden_size")?;
        let c = LlamaConfig {
            vocab_size: f.count("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: f.count("intermediate_size")?,
            num_hidden_layers: f.count("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: f.opt_count("num_key_value_heads")?.unwrap_or(heads),
            rms_norm_eps: f.number("rms_norm_eps", 1e-6)?,
            rope_theta: rope_theta(&f)?,
            rope_scaling: rope_scaling(&f)?,
            tie_word_embeddings: f.flag("tie_word_embeddings", false)?,
            max_position_embeddings: f.opt_count("max_position_embeddings")?.unwrap_or(2048),
        };
        check_heads(&f, &c)?;
        Ok(c)
    }
}

/// Fields whose presence changes the computation in a way brigade does not reproduce.
fn refuse_unrepresentable(f: &Fields) -> Result<(), ConfigError> {
    if let Some(t) = f.json.get("model_type").and_then(Value::as_str)
        && t != "llama"
    {
        return Err(f.err(
            "model_type",
            format!("\"{t}\" is not a Llama"),
            "brigade reads Llama-family checkpoints (model_type \"llama\").",
        ));
    }
    for field in ["attention_bias", "mlp_bias"] {
        if f.flag(field, false)? {
            return Err(f.err(
                field,
                "is true: brigade's llama_block has no biases",
                "Use a checkpoint without biases.",
            ));
        }
    }
    if let Some(act) = f.json.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(f.err(
            "hidden_act",
            format!("\"{act}\" is not supported"),
            "llama_block's feed-forward is SwiGLU (\"silu\").",
        ));
    }
    if f.json
        .get("attention_dropout")
        .and_then(Value::as_f64)
        .is_some_and(|p| p != 0.0)
    {
        return Err(f.err(
            "attention_dropout",
            "is not 0",
            "brigade's attention has no dropout; set it to 0.0.",
        ));
    }
    Ok(())
}

fn check_heads(f: &Fields, c: &LlamaConfig) -> Result<(), ConfigError> {
    let (d, h, kv) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads);
    if d % h != 0 || !(d / h).is_multiple_of(2) {
        return Err(f.err(
            "num_attention_heads",
            format!("{h} heads do not split hidden_size {d} into even head sizes"),
            "Rotary embeddings need an even head size.",
        ));
    }
    if h % kv != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{kv} does not divide num_attention_heads = {h}"),
            "Fix config.json.",
        ));
    }
    if let Some(hd) = f.opt_count("head_dim")?
        && hd != d / h
    {
        return Err(f.err(
            "head_dim",
            format!("{hd} is not hidden_size / num_attention_heads = {}", d / h),
            "brigade's llama_block derives the head size from the width.",
        ));
    }
    Ok(())
}

/// transformers 5 writes `rope_parameters` (with `rope_theta` inside); earlier versions, and
/// most published checkpoints, a top-level `rope_theta` and `rope_scaling`.
fn rope_theta(f: &Fields) -> Result<f64, ConfigError> {
    match f
        .json
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
    {
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 1.0)
            .ok_or_else(|| {
                f.err(
                    "rope_parameters.rope_theta",
                    format!("must be a number above 1, found {v}"),
                    "Fix config.json.",
                )
            }),
        None => f.number("rope_theta", 10_000.0),
    }
}

fn rope_scaling(f: &Fields) -> Result<Option<RopeScaling>, ConfigError> {
    let field = if f.json.contains_key("rope_parameters") {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    let Some(v) = f.json.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut table: toml::Table = serde_json::from_value(v.clone()).map_err(|e| {
        f.err(
            field,
            format!("is not a table of numbers and strings: {e}"),
            "Fix config.json.",
        )
    })?;
    table.remove("rope_theta");
    // Older configs say `type`; both name the same thing.
    if let Some(t) = table.remove("type") {
        table.entry("rope_type").or_insert(t);
    }
    if table.get("rope_type").and_then(|t| t.as_str()) == Some("default") {
        return Ok(None);
    }
    let s = crate::reader::Section::new(f.file, field, &table, RopeScaling::KEYS)?;
    RopeScaling::parse(&s).map(Some)
}
