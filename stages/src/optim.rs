//! The optimizers a topology names, on burn's `ModuleOptimizer`.

use crate::layer::LayerModule;
use brigade_partitioner::{Optimizer, Train};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};

/// A stage's optimizer with its learning rate.
pub struct StageOptimizer {
    inner: ModuleOptimizer,
    lr: f64,
}

impl StageOptimizer {
    pub fn step(&mut self, module: LayerModule, grads: GradientsParams) -> LayerModule {
        self.inner.step(self.lr, module, grads)
    }

    pub fn inner(&self) -> &ModuleOptimizer {
        &self.inner
    }

    /// Restores state saved with `inner().to_record().into_bytes()`.
    pub fn load(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let record =
            burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| e.to_string())?;
        self.inner = self.inner.clone().load_record(record);
        Ok(())
    }
}

/// SGD (momentum without dampening, as in PyTorch) or Adam, from `[train]`.
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
    };
    StageOptimizer {
        inner,
        lr: train.lr,
    }
}
