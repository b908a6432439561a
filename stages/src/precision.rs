//! Training in bf16 or f16 with f32 master weights (`[train] dtype`).
//!
//! Parameters and optimizer state stay f32. Each forward casts a layer's parameters to the
//! training dtype (a differentiable cast, so the weight gradients land on the f32 parameters
//! in f32), runs the layer in that dtype, and hands on activations in that dtype; the wire
//! carries them as they are (half the bytes of f32). The loss is taken in f32.

use brigade_layers::LayerModule;
use brigade_partitioner::TrainDType;
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;

/// The burn float dtype of a training dtype.
pub fn float_dtype(d: TrainDType) -> FloatDType {
    match d {
        TrainDType::F32 => FloatDType::F32,
        TrainDType::Bf16 => FloatDType::BF16,
        TrainDType::F16 => FloatDType::F16,
    }
}

/// Casts every float parameter, keeping it attached to the f32 original's graph.
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// `module` with its parameters in `dtype` (the module itself when that is f32).
pub fn compute_module(module: &LayerModule, dtype: FloatDType) -> LayerModule {
    let m = module.clone();
    if dtype == FloatDType::F32 {
        m
    } else {
        m.map(&mut CastParams(dtype))
    }
}
