//! What a training step reports. The reference trainer itself is the engine's executor with
//! one rank (`brigade_engine::reference`), so there is one step loop, not two.

use serde::{Deserialize, Serialize};

/// One line of a metrics JSONL file (the format `reference` and `train` both write).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// 1-based step number.
    pub step: u64,
    /// Mean loss over the step's batch.
    pub loss: f64,
    pub step_ms: f64,
    pub samples_per_sec: f64,
    /// The step's learning rate (after warm-up and schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// The global gradient norm before clipping, where `clip_grad_norm` computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
}
