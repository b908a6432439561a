//! A stage's layers over the model graph: the tensors it receives (its inputs), every tensor
//! its layers make, and the ones it sends on (its outputs). A chain stage has one of each; with
//! skip connections a stage may receive tensors from several earlier stages and send a tensor
//! to several later ones. Tensors are named by the layer that makes them ([`MODEL_INPUT`]: the
//! data).

use super::Stage;
use crate::act::Act;
use crate::precision::compute_module;
use brigade_layers::WeightGrads;
use brigade_layers::imp::{Forward, ForwardCtx};
use brigade_layers::products::Deferred;
use brigade_partitioner::Model;
use burn::module::Module;
use burn::tensor::FloatDType;
use std::collections::HashMap;
use std::ops::Range;

/// The tensor id of the model's input (what the first layer reads from the data).
pub const MODEL_INPUT: usize = usize::MAX;

/// How a stage's layers run.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Mode {
    /// Recording the graph (and ZB-H1's deferred weight products, when splitting).
    Train,
    /// Training values with nothing recorded (recomputation's first forward).
    NoGraph,
    /// Evaluation: nothing recorded, dropout off.
    Eval,
}

/// Which tensors a stage holding `layers` of `model` receives and sends, and what each of its
/// layers takes: (inputs, outputs, sources per layer).
pub fn wiring(model: &Model, layers: &Range<usize>) -> (Vec<usize>, Vec<usize>, Vec<Vec<usize>>) {
    let n = model.layers.len();
    let sources: Vec<Vec<usize>> = layers
        .clone()
        .map(|i| {
            let s = model.sources(i);
            if s.is_empty() { vec![MODEL_INPUT] } else { s }
        })
        .collect();
    let mut inputs: Vec<usize> = sources
        .iter()
        .flatten()
        .copied()
        .filter(|&t| t == MODEL_INPUT || t < layers.start)
        .collect();
    inputs.sort_unstable();
    inputs.dedup();
    let mut last_use: Vec<usize> = (0..n).collect();
    for i in 0..n {
        for t in model.sources(i) {
            last_use[t] = last_use[t].max(i);
        }
    }
    let outputs: Vec<usize> = if layers.end == n {
        vec![n - 1]
    } else {
        layers
            .clone()
            .filter(|&t| last_use[t] >= layers.end)
            .collect()
    };
    (inputs, outputs, sources)
}

impl Stage {
    /// The stage's layers on micro-batch `mb` from `inputs` (in [`Stage::input_tensors`]
    /// order, already in the compute dtype where they are floats): its outputs (in
    /// [`Stage::output_tensors`] order) and, under ZB-H1, what split layers' W will need.
    pub(super) fn apply(&self, mb: u64, inputs: Vec<Act>, mode: Mode) -> (Vec<Act>, Vec<Deferred>) {
        let mut env: HashMap<usize, Act> = self.inputs.iter().copied().zip(inputs).collect();
        let mut deferred = Vec::new();
        for (j, (kind, module)) in self.kinds.iter().zip(&self.modules).enumerate() {
            let global = self.layers.start + j;
            let sources = &self.sources[j];
            if kind.is_merge() {
                let parts = sources.iter().map(|t| env[t].clone()).collect();
                env.insert(global, kind.merge(parts));
                continue;
            }
            let x = env[&sources[0]].clone();
            let valid;
            let module = if mode == Mode::Train {
                module
            } else {
                valid = module.valid();
                &valid
            };
            let cast;
            let module = if self.dtype == FloatDType::F32 {
                module
            } else {
                cast = compute_module(module, self.dtype);
                &cast
            };
            let mut f = Forward {
                ctx: ForwardCtx {
                    seed: self.seed,
                    step: self.step,
                    microbatch: mb,
                    layer: global as u64,
                    train: mode != Mode::Eval,
                },
                // Only a recorded forward defers weight gradients.
                weights: match mode {
                    Mode::Train => self.weights,
                    Mode::NoGraph | Mode::Eval => WeightGrads::InBackward,
                },
                local: j,
                deferred: &mut deferred,
            };
            env.insert(global, kind.forward(module, x, &mut f));
        }
        let outputs = self.outputs.iter().map(|t| env[t].clone()).collect();
        (outputs, deferred)
    }
}
