//! A Hugging Face checkpoint brigade cannot represent exactly is refused by name: one case
//! each, the error naming the file and the field or tensor (the loader reads only headers, so
//! the tensors here hold zeros).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A valid tiny Llama config: 2 layers, width 8, 2 heads on 1 key/value head, vocabulary 16.
fn config() -> Value {
    json!({
        "model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 32, "hidden_act": "silu"
    })
}

/// Every tensor of that config (name, shape).
fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![16, 8])];
    for i in 0..2 {
        let p = format!("model.layers.{i}");
        t.extend([
            (format!("{p}.input_layernorm.weight"), vec![8]),
            (format!("{p}.self_attn.q_proj.weight"), vec![8, 8]),
            (format!("{p}.self_attn.k_proj.weight"), vec![4, 8]),
            (format!("{p}.self_attn.v_proj.weight"), vec![4, 8]),
            (format!("{p}.self_attn.o_proj.weight"), vec![8, 8]),
            (format!("{p}.post_attention_layernorm.weight"), vec![8]),
            (format!("{p}.mlp.gate_proj.weight"), vec![12, 8]),
            (format!("{p}.mlp.up_proj.weight"), vec![12, 8]),
            (format!("{p}.mlp.down_proj.weight"), vec![8, 12]),
        ]);
    }
    t.push(("model.norm.weight".into(), vec![8]));
    t.push(("lm_head.weight".into(), vec![16, 8]));
    t
}

/// A safetensors file of zeros: 8 bytes of header length, the JSON header, the data.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)], dtype: &str) {
    let size = if dtype == "F32" { 4 } else { 2 };
    let mut header = serde_json::Map::new();
    let mut at = 0;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * size;
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}),
        );
        at += n;
    }
    let h = Value::Object(header).to_string().into_bytes();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(vec![0u8; at]);
    std::fs::write(path, bytes).unwrap();
}

/// Loads a topology reading a checkpoint made of `config` and `tensors`; the error text.
fn error(test: &str, config: Value, tensors: &[(String, Vec<usize>)], seq: usize) -> String {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("brigade-hf-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_safetensors(&dir.join("model.safetensors"), tensors, "F32");
    let toml = format!(
        "[model]\nhf = \".\"\nseq = {seq}\n[[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n"
    );
    let r = brigade_partitioner::parse(&dir.join("t.toml").display().to_string(), &toml, &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

fn with(key: &str, v: Value) -> Value {
    let mut c = config();
    c[key] = v;
    c
}

#[test]
fn a_valid_checkpoint_loads() {
    assert_eq!(error("ok", config(), &tensors(), 16), "accepted");
}

#[test]
fn unrepresentable_configs_name_the_field() {
    let cases = [
        (
            "bias",
            with("attention_bias", json!(true)),
            "attention_bias",
        ),
        ("mlp-bias", with("mlp_bias", json!(true)), "mlp_bias"),
        ("act", with("hidden_act", json!("gelu")), "hidden_act"),
        ("type", with("model_type", json!("mistral")), "model_type"),
        ("head-dim", with("head_dim", json!(16)), "head_dim"),
        (
            "kv",
            with("num_key_value_heads", json!(3)),
            "num_key_value_heads",
        ),
        ("missing", with("hidden_size", Value::Null), "hidden_size"),
        (
            "yarn",
            with("rope_scaling", json!({"rope_type": "yarn", "factor": 4.0})),
            "rope_type",
        ),
        (
            "llama3-short",
            with(
                "rope_scaling",
                json!({"rope_type": "llama3", "factor": 8.0}),
            ),
            "low_freq_factor",
        ),
    ];
    for (test, c, field) in cases {
        let e = error(test, c, &tensors(), 16);
        assert!(
            e.contains("config.json") && e.contains(field),
            "{test}: {e}"
        );
    }
}

#[test]
fn sequences_longer_than_the_model_are_refused() {
    let e = error("seq", config(), &tensors(), 64);
    assert!(
        e.contains("model.seq") && e.contains("max_position_embeddings"),
        "{e}"
    );
}

#[test]
fn checkpoint_tensors_are_checked_by_name() {
    let mut missing = tensors();
    missing.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    let e = error("missing-tensor", config(), &missing, 16);
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );

    let mut misshapen = tensors();
    misshapen[2].1 = vec![8, 4];
    let e = error("misshapen", config(), &misshapen, 16);
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.weight") && e.contains("shape"),
        "{e}"
    );

    let mut extra = tensors();
    extra.push(("model.layers.0.self_attn.q_proj.bias".into(), vec![8]));
    let e = error("extra", config(), &extra, 16);
    assert!(e.contains("q_proj.bias") && e.contains("no place"), "{e}");
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("brigade-hf-{}-truncated", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &tensors(), "F32");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let toml = "[model]\nhf = \".\"\nseq = 16\n[[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n";
    let e = brigade_partitioner::parse(&dir.join("t.toml").display().to_string(), toml, &[])
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        e.contains("model.safetensors") && e.contains("past the end"),
        "{e}"
    );
}

/// A tied checkpoint loads with or without a stored `lm_head.weight` (transformers ignores it
/// and ties the head to the embedding, so brigade does too).
#[test]
fn tied_checkpoints_load_with_or_without_a_stored_head() {
    let tied = with("tie_word_embeddings", json!(true));
    assert_eq!(error("tied-head", tied.clone(), &tensors(), 16), "accepted");
    let mut no_head = tensors();
    no_head.retain(|(n, _)| n != "lm_head.weight");
    assert_eq!(error("tied-no-head", tied, &no_head, 16), "accepted");
    // Untied, the head's tensor is required.
    let e = error("untied-no-head", config(), &no_head, 16);
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
}
