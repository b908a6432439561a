//! Hugging Face Llama checkpoints as brigade models: `[model] hf = "DIR"` reads DIR/config.json
//! into layers ([`config`]), checks DIR's safetensors against the names and shapes those layers
//! need ([`tensors`], [`names`]), and keeps what a stage needs to load them and what an export
//! needs to write them back. Pure: headers are read here, tensor data by the stages.

pub mod config;
pub mod names;
pub mod tensors;

pub use config::LlamaConfig;
pub use names::HfName;
use serde::Serialize;

/// A model read from a Hugging Face checkpoint directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HfModel {
    /// The checkpoint directory (resolved against the topology file's folder; not part of
    /// the job's identity, so hosts may keep it at different paths).
    #[serde(skip)]
    pub dir: String,
    /// config.json as read (written back, with brigade's changes, by an export).
    #[serde(skip)]
    pub config_json: serde_json::Value,
    pub config: LlamaConfig,
    /// Every parameter brigade holds, with its Hugging Face name and file.
    pub names: Vec<HfName>,
}
