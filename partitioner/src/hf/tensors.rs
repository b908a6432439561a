//! The safetensors headers of a checkpoint directory (`model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists): which tensors exist, in which file, with which dtype
//! and shape. Only headers are read here (8 bytes of length, then JSON); data stays on disk.

use super::HfName;
use crate::error::ConfigError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub file: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// Every tensor in `dir`'s checkpoint by name.
pub fn list(dir: &Path) -> Result<BTreeMap<String, TensorInfo>, ConfigError> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<String> = if index.exists() {
        shards(&index)?
    } else {
        vec!["model.safetensors".to_string()]
    };
    let mut all = BTreeMap::new();
    for f in files {
        for (name, (dtype, shape)) in header(&dir.join(&f))? {
            all.insert(
                name,
                TensorInfo {
                    file: f.clone(),
                    dtype,
                    shape,
                },
            );
        }
    }
    Ok(all)
}

fn shards(index: &Path) -> Result<Vec<String>, ConfigError> {
    let file = index.display().to_string();
    let json: Value = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ConfigError::invalid(
                &file,
                "weight_map",
                "is missing or not an object",
                "Re-save the checkpoint with transformers' save_pretrained.",
            )
        })?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    if let Some(bad) = files.iter().find(|f| f.contains('/') || f.contains("..")) {
        return Err(ConfigError::invalid(
            &file,
            "weight_map",
            format!("names \"{bad}\" outside the directory"),
            "Shards must sit beside the index.",
        ));
    }
    Ok(files)
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ConfigError::invalid(
            &file,
            "(JSON)",
            e,
            "The file is not valid JSON; re-save it.",
        )
    })
}

type Header = Vec<(String, (String, Vec<usize>))>;

/// The tensors a safetensors file declares, checked against its length.
fn header(path: &Path) -> Result<Header, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let bad = |why: String| {
        ConfigError::invalid(
            &file,
            "(header)",
            why,
            "The file is not a complete safetensors file; re-save or re-download it.",
        )
    };
    let io = |source| ConfigError::Io {
        file: file.clone(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let total = f.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("shorter than 8 bytes ({e})")))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 || 8 + n > total {
        return Err(bad(format!(
            "declares a {n}-byte header in a {total}-byte file"
        )));
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).map_err(|e| bad(e.to_string()))?;
    let v: BTreeMap<String, Value> =
        serde_json::from_slice(&json).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let data_len = total - 8 - n;
    v.into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, e)| entry(&k, &e, data_len).map(|x| (k, x)).map_err(bad))
        .collect()
}

fn entry(name: &str, e: &Value, data_len: u64) -> Result<(String, Vec<usize>), String> {
    let dtype = e
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or(format!("{name}: no dtype"))?;
    let shape: Vec<usize> = e
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
        .ok_or(format!("{name}: no shape"))?;
    let offsets: Vec<u64> = e
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect())
        .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1] && o[1] <= data_len)
        .ok_or(format!(
            "{name}: data_offsets missing or past the end of the file"
        ))?;
    let size = match dtype {
        "F32" => 4,
        "BF16" | "F16" => 2,
        _ => return Ok((dtype.to_string(), shape)), // refused by `assign`, naming the tensor
    };
    let want = shape
        .iter()
        .try_fold(size as u64, |a, &d| a.checked_mul(d as u64));
    if want != Some(offsets[1] - offsets[0]) {
        return Err(format!(
            "{name}: {} bytes for shape {shape:?} of {dtype}",
            offsets[1] - offsets[0]
        ));
    }
    Ok((dtype.to_string(), shape))
}

/// Sets each name's file, checking that every tensor brigade needs is there with its shape and
/// a float dtype, and that the checkpoint holds nothing brigade would silently drop.
pub fn assign(
    dir: &Path,
    names: &mut [HfName],
    found: &BTreeMap<String, TensorInfo>,
) -> Result<(), ConfigError> {
    let dir_s = dir.display().to_string();
    for n in names.iter_mut() {
        let t = found.get(&n.hf).ok_or_else(|| {
            ConfigError::invalid(
                &dir_s,
                &n.hf,
                "is missing from the checkpoint",
                "Use the checkpoint's complete directory (all shards and the index).",
            )
        })?;
        let file = dir.join(&t.file).display().to_string();
        if !matches!(t.dtype.as_str(), "F32" | "BF16" | "F16") {
            return Err(ConfigError::invalid(
                &file,
                &n.hf,
                format!("is {}", t.dtype),
                "brigade reads F32, BF16 and F16 weights.",
            ));
        }
        if t.shape != n.hf_shape {
            return Err(ConfigError::invalid(
                &file,
                &n.hf,
                format!(
                    "has shape {:?}, config.json implies {:?}",
                    t.shape, n.hf_shape
                ),
                "The weights do not belong to this config.json.",
            ));
        }
        n.file = t.file.clone();
    }
    let used: std::collections::BTreeSet<&str> = names.iter().map(|n| n.hf.as_str()).collect();
    let ignorable = |k: &str| k.ends_with("rotary_emb.inv_freq") || k == "lm_head.weight";
    if let Some((k, t)) = found
        .iter()
        .find(|(k, _)| !used.contains(k.as_str()) && !ignorable(k))
    {
        return Err(ConfigError::invalid(
            &dir.join(&t.file).display().to_string(),
            k,
            "is a tensor brigade's Llama has no place for",
            "brigade builds embedding, llama_block (no biases), rms_norm and the head from config.json; a checkpoint with other tensors is another architecture.",
        ));
    }
    Ok(())
}
