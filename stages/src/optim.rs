//! The optimizers a topology names, on burn's `ModuleOptimizer`.

use brigade_layers::LayerModule;
use brigade_partitioner::{LrSchedule, Optimizer, Train};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};

/// A stage's optimizer with its learning-rate schedule.
pub struct StageOptimizer {
    inner: ModuleOptimizer,
    lr: f64,
    schedule: LrSchedule,
    steps: usize,
}

impl StageOptimizer {
    /// Step `step` (0-based) of the run, at that step's learning rate.
    pub fn step(&mut self, step: u64, module: LayerModule, grads: GradientsParams) -> LayerModule {
        let lr = self.schedule.lr_at(self.lr, step, self.steps);
        self.inner.step(lr, module, grads)
    }

    pub fn inner(&self) -> &ModuleOptimizer {
        &self.inner
    }

    /// Restores state saved with `inner().to_record().into_bytes()`, once
    /// [`check_record`] has accepted it.
    pub fn load(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let record =
            burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| e.to_string())?;
        self.inner = self.inner.clone().load_record(record);
        Ok(())
    }
}

/// SGD (momentum without dampening, as in PyTorch), Adam (L2 decay added to the gradient, as
/// torch.optim.Adam) or AdamW (decoupled decay, as torch.optim.AdamW), from `[train]`.
pub fn make_optimizer(train: &Train) -> StageOptimizer {
    let decay = |wd: f64| (wd > 0.0).then_some(WeightDecayConfig { penalty: wd as f32 });
    let inner = match train.optimizer {
        Optimizer::Sgd {
            momentum,
            weight_decay,
        } => SgdConfig::new()
            .with_momentum((momentum > 0.0).then_some(MomentumConfig {
                momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(decay(weight_decay))
            .init(),
        Optimizer::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => AdamConfig::new()
            .with_beta_1(beta1 as f32)
            .with_beta_2(beta2 as f32)
            .with_epsilon(eps as f32)
            .with_weight_decay(decay(weight_decay))
            .init(),
        Optimizer::Adamw {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => AdamWConfig::new()
            .with_beta_1(beta1 as f32)
            .with_beta_2(beta2 as f32)
            .with_epsilon(eps as f32)
            .with_weight_decay(weight_decay as f32)
            .init(),
    };
    StageOptimizer {
        inner,
        lr: train.lr,
        schedule: train.lr_schedule,
        steps: train.steps,
    }
}

/// Checks an optimizer record (burnpack bytes) against the layer it is for — `params`: each
/// parameter's id and shape — before burn reads it: burn accepts state for parameters it does
/// not hold (ignoring it: the layer would silently restart its optimizer) and trusts shapes
/// and lengths. Every tensor must belong to one of the layer's parameters, have its shape and
/// as many bytes as its shape and type say; with `stateful` (Adam, momentum) every parameter
/// must have state.
pub fn check_record(
    bytes: &[u8],
    params: &[(u64, Vec<usize>)],
    stateful: bool,
) -> Result<(), String> {
    let reader = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| format!("not an optimizer record ({e})"))?;
    let tensors = reader
        .into_tensors()
        .map_err(|e| format!("not an optimizer record ({e})"))?;
    let mut seen = std::collections::BTreeSet::new();
    for t in tensors {
        let (name, dtype, shape, id, data) = t
            .into_parts()
            .map_err(|e| format!("a damaged tensor in the record ({e})"))?;
        let Some((id, want)) = id.and_then(|id| params.iter().find(|(p, _)| *p == id)) else {
            return Err(format!(
                "state `{name}` belongs to no parameter of this layer (a record of another layer or model?)"
            ));
        };
        let dims: Vec<usize> = shape.iter().copied().collect();
        if &dims != want {
            return Err(format!(
                "state `{name}` has shape {dims:?}, its parameter {want:?}"
            ));
        }
        let n: usize = dims.iter().product();
        if data.len() != n * dtype.size() {
            return Err(format!(
                "state `{name}` holds {} bytes, its shape and type need {}",
                data.len(),
                n * dtype.size()
            ));
        }
        seen.insert(*id);
    }
    if stateful && let Some((id, _)) = params.iter().find(|(p, _)| !seen.contains(p)) {
        return Err(format!("no state for parameter {id:016x} of this layer"));
    }
    Ok(())
}
