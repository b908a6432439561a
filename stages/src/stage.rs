//! One pipeline stage: a contiguous range of layers on a device, with the autodiff graphs of
//! the micro-batches it has run forward and not yet backward.
//!
//! burn has no API to seed a backward pass with an upstream gradient, so a middle stage
//! backpropagates the scalar `sum(output ⊙ g)`: its gradient with respect to `output` is exactly
//! `g`, so every gradient below it is what one big graph would have produced. The stage's input
//! is a fresh leaf that requires grad; its gradient is what the stage sends upstream.

use crate::act::Act;
use crate::loss::{Target, loss};
use crate::optim::{StageOptimizer, make_optimizer};
use crate::params::{AssignIds, NamedParam, named_params, take_grads};
use crate::precision::{compute_module, float_dtype};
use brigade_layers::products::{self, Deferred};
use brigade_layers::{LayerModule, WeightGrads};
use brigade_partitioner::{LayerKind, Topology};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::FloatDType;
use std::collections::BTreeMap;
use std::ops::Range;

mod clip;
mod eval;
mod reduce;
mod run;
mod tie;

pub use clip::{clip_coef, global_norm};
pub use reduce::BucketSlots;
use run::Mode;
pub use run::{MODEL_INPUT, wiring};
pub use tie::Tie;

/// A mistake in how a stage is driven (a schedule or a peer out of step), never a panic.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StageError {
    #[error("stage {stage}: micro-batch {mb} was already run forward and not yet backward")]
    AlreadyLive { stage: usize, mb: u64 },
    #[error("stage {stage}: backward of micro-batch {mb}, which has no forward pending")]
    NotLive { stage: usize, mb: u64 },
    #[error("stage {stage}: input of micro-batch {mb} has shape {got:?}, expected {expected:?}")]
    InputShape {
        stage: usize,
        mb: u64,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("stage {stage}: gradient of micro-batch {mb} has shape {got:?}, expected {expected:?}")]
    GradShape {
        stage: usize,
        mb: u64,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("stage {stage} is not the last stage, it has no loss")]
    NotLast { stage: usize },
    #[error("stage {stage}: optimizer step with {live} micro-batches still waiting for backward")]
    StepWithLive { stage: usize, live: usize },
    #[error("stage {stage}: weight-gradient pass of micro-batch {mb}, which has no B pending")]
    NoWeightPending { stage: usize, mb: u64 },
    #[error("stage {stage}: reduced gradients of {got} values, the stage has {expected}")]
    Gradients {
        stage: usize,
        expected: usize,
        got: usize,
    },
}

struct Live {
    /// The received tensors (tracked for their gradients past the first stage).
    input: Vec<Act>,
    /// The outputs with their graph; `None` under recomputation until backward re-runs forward.
    output: Option<Vec<Act>>,
    /// Deferred linear products' inputs and output probes.
    deferred: Vec<Deferred>,
}

/// One stage's layers, optimizer and in-flight micro-batches.
pub struct Stage {
    index: usize,
    layers: Range<usize>,
    kinds: Vec<LayerKind>,
    modules: Vec<LayerModule>,
    /// `[microbatch, ..]` of each tensor the stage receives and sends.
    input_shapes: Vec<Vec<usize>>,
    output_shapes: Vec<Vec<usize>>,
    /// The tensors it receives and sends (by the layer making them; [`MODEL_INPUT`]: the data),
    /// and the tensors each of its layers takes.
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    sources: Vec<Vec<usize>>,
    last: bool,
    device: Device,
    /// One optimizer per layer, so each layer's state can be saved and restored on its own.
    optims: Vec<StageOptimizer>,
    accum: GradientsAccumulator<Vec<LayerModule>>,
    live: BTreeMap<u64, Live>,
    seed: u64,
    microbatches: usize,
    step: u64,
    /// Keep only each micro-batch's input and recompute its forward at backward time.
    recompute: bool,
    /// What activations are computed in (parameters stay f32; see [`crate::precision`]).
    dtype: FloatDType,
    /// How linear products take their weight gradients (`brigade_layers::strategy`).
    weights: WeightGrads,
    /// Micro-batches past B whose weight gradients are still to take (by W, or at the step's
    /// end when batched).
    pending_w: BTreeMap<u64, Vec<Deferred>>,
    /// Data parallelism: where each gradient sits in the buffer being reduced, and the
    /// reduced gradients the next optimizer step applies.
    reduce_slots: Option<reduce::BucketSlots>,
    reduced: Option<GradientsParams>,
    /// Gradients taken out of the accumulator for buckets still to be cut.
    taken: Option<GradientsParams>,
    stateful_optimizer: bool,
    /// `train.clip_grad_norm`.
    clip_grad_norm: Option<f64>,
    /// `model.tie_word_embeddings` (`stage/tie.rs`).
    tie: Option<Tie>,
}

impl Stage {
    /// Stage `index` holding `layers` of `topo`'s model on `device` (autodiff is added here).
    pub fn new(topo: &Topology, index: usize, layers: Range<usize>, device: &Device) -> Stage {
        let device = device.clone().autodiff();
        let graph = topo.model.graph();
        let mbs = topo.train.microbatch_size();
        let with_batch = |s: &[usize]| {
            std::iter::once(mbs)
                .chain(s.iter().copied())
                .collect::<Vec<_>>()
        };
        let modules = layers
            .clone()
            .map(|i| {
                let node = graph.layer(i);
                (node.kind)
                    .init(&node.input_shape, topo.train.seed, i, &device)
                    .map(&mut AssignIds::new(i))
            })
            .collect();
        let modules_len = layers.len();
        let (inputs, outputs, sources) = wiring(&topo.model, &layers);
        let shape_of = |t: usize| {
            if t == MODEL_INPUT {
                with_batch(&topo.model.input)
            } else {
                with_batch(&graph.layer(t).output_shape)
            }
        };
        let mut stage = Stage {
            input_shapes: inputs.iter().map(|&t| shape_of(t)).collect(),
            output_shapes: outputs.iter().map(|&t| shape_of(t)).collect(),
            inputs,
            outputs,
            sources,
            index,
            kinds: layers
                .clone()
                .map(|i| graph.layer(i).kind.clone())
                .collect(),
            last: layers.end == graph.len(),
            layers,
            modules,
            optims: (0..modules_len)
                .map(|_| make_optimizer(&topo.train))
                .collect(),
            accum: GradientsAccumulator::new(),
            live: BTreeMap::new(),
            seed: topo.train.seed,
            microbatches: topo.train.microbatches,
            step: 0,
            recompute: topo.train.recomputes(index),
            dtype: float_dtype(topo.train.dtype),
            weights: topo.train.weight_grads(),
            pending_w: BTreeMap::new(),
            reduce_slots: None,
            reduced: None,
            taken: None,
            stateful_optimizer: topo.train.optimizer.state_copies() > 1,
            clip_grad_norm: topo.train.clip_grad_norm,
            tie: Tie::of(topo),
            device,
        };
        stage.copy_tied_init(topo);
        stage
    }

    /// Turns ZB-H1's split backward off (a stage follows its topology's schedule; the
    /// one-rank reference never splits, whatever the schedule).
    pub fn set_split_weights(&mut self, split: bool) {
        if !split && self.weights == WeightGrads::PerMicrobatch {
            self.weights = WeightGrads::InBackward;
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    pub fn is_last(&self) -> bool {
        self.last
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Optimizer steps taken so far (the 0-based index of the step being run).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Linear products past their backward whose weight gradients are still to take (by a W
    /// instruction, or at the step's end when batched).
    pub fn deferred_products(&self) -> usize {
        self.pending_w.values().map(Vec::len).sum()
    }

    /// Micro-batches run forward and waiting for their backward.
    pub fn live_microbatches(&self) -> usize {
        self.live.len()
    }

    /// `[microbatch, ..]` shape of the (first) tensor the stage receives.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shapes[0]
    }

    /// `[microbatch, ..]` shape of the (first) tensor the stage sends.
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shapes[0]
    }

    /// The tensors the stage receives, by the layer making them ([`MODEL_INPUT`]: the data).
    pub fn input_tensors(&self) -> &[usize] {
        &self.inputs
    }

    /// The tensors the stage sends on (its last layer's output on the last stage).
    pub fn output_tensors(&self) -> &[usize] {
        &self.outputs
    }

    /// Runs micro-batch `mb` forward from its one input; returns its one output (a chain stage).
    pub fn forward(&mut self, mb: u64, input: Act) -> Result<Act, StageError> {
        let mut out = self.forward_many(mb, vec![input])?;
        Ok(out.swap_remove(0))
    }

    /// Runs micro-batch `mb` forward from the tensors it receives ([`Stage::input_tensors`]
    /// order), keeping its graph; returns the tensors to send on ([`Stage::output_tensors`]).
    pub fn forward_many(&mut self, mb: u64, inputs: Vec<Act>) -> Result<Vec<Act>, StageError> {
        // A received tensor arrives without autodiff (see `Act::inner`).
        let input: Vec<Act> = inputs.into_iter().map(Act::autodiff).collect();
        if self.live.contains_key(&mb) {
            return Err(StageError::AlreadyLive {
                stage: self.index,
                mb,
            });
        }
        let dims: Vec<Vec<usize>> = input.iter().map(Act::dims).collect();
        if dims != self.input_shapes {
            let k = (0..self.input_shapes.len())
                .find(|&k| dims.get(k) != Some(&self.input_shapes[k]))
                .unwrap_or(0);
            return Err(StageError::InputShape {
                stage: self.index,
                mb,
                expected: self.input_shapes[k].clone(),
                got: dims.get(k).cloned().unwrap_or_default(),
            });
        }
        // Under recomputation only the input is kept; backward re-runs forward (dropout masks
        // are keyed by step, micro-batch and layer, so the rerun is the same computation). The
        // forward records no graph: burn frees a dropped graph's saved tensors only at
        // the next backward, so a recorded-then-dropped graph would still cost its memory
        // (measured: GPipe on mlp-8x1024, batch 2048, 143 MiB peak without recomputation, 124
        // recording and dropping the graph, 85 with no graph).
        if self.recompute {
            let out = self.run_without_graph(mb, input.clone());
            let input = input.into_iter().map(Act::detach).collect();
            self.live.insert(
                mb,
                Live {
                    input,
                    output: None,
                    deferred: Vec::new(),
                },
            );
            return Ok(out);
        }
        let (input, x, deferred) = self.run_layers(mb, input);
        let out = x.iter().cloned().map(Act::detach).collect();
        self.live.insert(
            mb,
            Live {
                input,
                output: Some(x),
                deferred,
            },
        );
        Ok(out)
    }

    /// The stage's layers on micro-batch `mb` with no graph recorded: an untracked input and
    /// the parameters as constants (`valid`), still computed by the autodiff backend so the
    /// values are a recorded forward's.
    fn run_without_graph(&self, mb: u64, input: Vec<Act>) -> Vec<Act> {
        let x = input
            .into_iter()
            .map(|a| a.detach().cast(self.dtype))
            .collect();
        self.apply(mb, x, Mode::NoGraph).0
    }

    /// The stage's layers on micro-batch `mb`: (the input, tracked for its gradient past the
    /// first stage, the output with its graph, and what split layers' W will need).
    fn run_layers(&self, mb: u64, input: Vec<Act>) -> (Vec<Act>, Vec<Act>, Vec<Deferred>) {
        let input: Vec<Act> = input
            .into_iter()
            .zip(&self.inputs)
            .map(|(a, &t)| {
                if t == MODEL_INPUT {
                    a
                } else {
                    a.require_grad()
                }
            })
            .collect();
        // A no-op past the first stage, whose input arrives in the training dtype.
        let x = input.iter().map(|a| a.clone().cast(self.dtype)).collect();
        let (out, deferred) = self.apply(mb, x, Mode::Train);
        (input, out, deferred)
    }

    /// The output of live micro-batch `mb` with its graph, recomputing it if it was dropped.
    fn output(&mut self, mb: u64) -> Result<Vec<Act>, StageError> {
        let live = self.live.get(&mb).ok_or(StageError::NotLive {
            stage: self.index,
            mb,
        })?;
        if let Some(out) = &live.output {
            return Ok(out.clone());
        }
        let (input, out, deferred) = self.run_layers(mb, live.input.clone());
        self.live.insert(
            mb,
            Live {
                input,
                output: Some(out.clone()),
                deferred,
            },
        );
        Ok(out)
    }

    /// Backward of micro-batch `mb` from the gradient of its one output; accumulates
    /// parameter gradients and returns the input's gradient (None on the first stage).
    pub fn backward(&mut self, mb: u64, grad: Act) -> Result<Option<Act>, StageError> {
        Ok(self.backward_many(mb, vec![grad])?.into_iter().next())
    }

    /// Backward of micro-batch `mb` from the gradients of its outputs ([`Stage::output_tensors`]
    /// order; a tensor sent to several stages gets the sum of theirs); accumulates parameter
    /// gradients and returns the gradients of the tensors it received (none on the first stage).
    pub fn backward_many(&mut self, mb: u64, grads: Vec<Act>) -> Result<Vec<Act>, StageError> {
        let grads: Vec<Act> = grads.into_iter().map(Act::autodiff).collect();
        if !self.live.contains_key(&mb) {
            return Err(StageError::NotLive {
                stage: self.index,
                mb,
            });
        }
        let dims: Vec<Vec<usize>> = grads.iter().map(Act::dims).collect();
        if dims != self.output_shapes {
            let k = (0..self.output_shapes.len())
                .find(|&k| dims.get(k) != Some(&self.output_shapes[k]))
                .unwrap_or(0);
            return Err(StageError::GradShape {
                stage: self.index,
                mb,
                expected: self.output_shapes[k].clone(),
                got: dims.get(k).cloned().unwrap_or_default(),
            });
        }
        let outputs = self.output(mb)?;
        // burn runs a backward deepest node first, and nodes of one depth in the order it finds
        // them from the root, last term first. Summing the seeds from the last output to the
        // first makes it find the earliest tensors' seeds (skip connections) first, so their
        // gradients from later stages are added before those of this stage's own layers, as
        // one process adds them (those later layers are deeper there).
        let seed = outputs
            .iter()
            .zip(&grads)
            .rev()
            .map(|(o, g)| o.dot(g))
            .reduce(|a, b| a + b)
            .expect("a stage has outputs");
        Ok(self.backward_from(mb, seed))
    }

    /// On the last stage: the loss of micro-batch `mb` against `target`, scaled by 1/M so the
    /// M micro-batches add up to the batch mean, and its backward. Returns the micro-batch's
    /// (unscaled) mean loss and the input's gradient.
    pub fn backward_loss(
        &mut self,
        mb: u64,
        target: &Target,
    ) -> Result<(f32, Option<Act>), StageError> {
        let (loss, grad) = self.backward_loss_deferred(mb, target)?;
        Ok((loss.into_scalar::<f32>(), grad.into_iter().next()))
    }

    /// [`Stage::backward_loss`] with the loss left on the device as a one-element tensor, so a
    /// GPU stage does not wait for its queue to drain once per micro-batch: read the step's
    /// losses together at its end.
    pub fn backward_loss_deferred(
        &mut self,
        mb: u64,
        target: &Target,
    ) -> Result<(Tensor<1>, Vec<Act>), StageError> {
        if !self.last {
            return Err(StageError::NotLast { stage: self.index });
        }
        // The loss (a mean over the micro-batch) is taken in f32 whatever the training dtype.
        let output = self.output(mb)?.swap_remove(0).cast(FloatDType::F32);
        let l = loss(&output, target);
        let value = l.clone().detach();
        let scaled = l / self.microbatches as f64;
        Ok((value, self.backward_from(mb, scaled)))
    }

    fn backward_from(&mut self, mb: u64, root: Tensor<1>) -> Vec<Act> {
        let mut live = self.live.remove(&mb).expect("checked by the caller");
        let grads = root.backward();
        // An input nothing depended on (possible only in odd graphs) gets a zero gradient.
        let input_grad = live
            .input
            .iter()
            .zip(&self.inputs)
            .filter(|(_, t)| **t != MODEL_INPUT)
            .map(|(a, _)| a.grad(&grads).unwrap_or_else(|| a.zeros_like()))
            .collect();
        if self.weights.defers() {
            // Keep each deferred product's output gradient for W (a product the loss does not
            // reach has none, and no W to run).
            let deferred = std::mem::take(&mut live.deferred)
                .into_iter()
                .filter_map(|mut d| {
                    d.probe_or_grad = d.probe_or_grad.grad(&grads)?;
                    Some(d)
                })
                .collect();
            self.pending_w.insert(mb, deferred);
        }
        let params = GradientsParams::from_grads(grads, &self.modules);
        self.accum.accumulate(&self.modules, params);
        input_grad
    }

    /// ZB-H1's W for micro-batch `mb`: the weight gradients of the split layers, deferred
    /// from its backward (B), accumulated as the unsplit backward would have.
    pub fn backward_weight(&mut self, mb: u64) -> Result<(), StageError> {
        let pending = self
            .pending_w
            .remove(&mb)
            .ok_or(StageError::NoWeightPending {
                stage: self.index,
                mb,
            })?;
        for d in pending {
            let grads = self.product_grads(d.layer, d.product, &d.input, &d.probe_or_grad);
            self.accum.accumulate(&self.modules, grads);
        }
        Ok(())
    }

    /// The weight gradients of product `product` of local layer `j` from its input `x` and its
    /// output's gradient `g`.
    fn product_grads(&self, j: usize, product: &str, x: &Act, g: &Act) -> GradientsParams {
        let missing = || panic!("layer {j} has no linear product {product}");
        let master = self.modules[j].linear(product).unwrap_or_else(missing);
        let module = compute_module(&self.modules[j], self.dtype);
        let module = module.linear(product).unwrap_or_else(missing);
        products::weight_grads(master, module, x, g)
    }

    /// Under `batch_weight_grads`: every micro-batch's deferred linear inputs and output
    /// gradients, layer by layer, as one product each (micro-batches in order, so every split
    /// and schedule computes the same sums).
    pub(super) fn flush_batched_weights(&mut self) {
        self.flush_batched_weights_where(|_| true);
    }

    /// [`Stage::flush_batched_weights`] of the local layers `take` accepts only (a bucket of
    /// gradients for the replicas), leaving the others deferred.
    pub(super) fn flush_batched_weights_where(&mut self, take: impl Fn(usize) -> bool) {
        if self.weights != WeightGrads::PerStep || self.pending_w.is_empty() {
            return;
        }
        type Rows = (Vec<Act>, Vec<Act>);
        let mut by_product: BTreeMap<(usize, &'static str), Rows> = BTreeMap::new();
        for deferred in self.pending_w.values_mut() {
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(deferred)
                .into_iter()
                .partition(|d| take(d.layer));
            *deferred = later;
            for d in now {
                let e = by_product.entry((d.layer, d.product)).or_default();
                e.0.push(d.input);
                e.1.push(d.probe_or_grad);
            }
        }
        self.pending_w.retain(|_, v| !v.is_empty());
        for ((j, product), (xs, gs)) in by_product {
            let (x, g) = (Act::cat(xs, 0), Act::cat(gs, 0));
            let grads = self.product_grads(j, product, &x, &g);
            self.accum.accumulate(&self.modules, grads);
        }
    }

    /// Applies the accumulated gradients and starts the next step.
    pub fn optimizer_step(&mut self) -> Result<(), StageError> {
        self.flush_batched_weights();
        if !self.live.is_empty() || !self.pending_w.is_empty() {
            return Err(StageError::StepWithLive {
                stage: self.index,
                live: self.live.len() + self.pending_w.len(),
            });
        }
        // Reduced over the replicas, or this stage's own.
        let mut grads = match self.reduced.take() {
            Some(g) => g,
            None => self.accum.grads(),
        };
        let modules = std::mem::take(&mut self.modules);
        let step = self.step;
        self.modules = modules
            .into_iter()
            .zip(self.optims.iter_mut())
            .map(|(m, opt)| {
                let g = take_grads(&m, &mut grads);
                if g.is_empty() {
                    m
                } else {
                    opt.step(step, m, g)
                }
            })
            .collect();
        self.step += 1;
        Ok(())
    }

    /// Each layer's optimizer state as bytes (burn's burnpack record), keyed by layer index.
    pub fn optimizer_states(&self) -> Vec<(usize, Result<Vec<u8>, String>)> {
        self.layers
            .clone()
            .zip(&self.optims)
            .map(|(i, o)| {
                (
                    i,
                    o.inner()
                        .to_record()
                        .into_bytes()
                        .map(|b| b.to_vec())
                        .map_err(|e| e.to_string()),
                )
            })
            .collect()
    }

    /// Restores layer `layer`'s optimizer state from [`Stage::optimizer_states`] bytes.
    /// `stateful`: the record must hold state for every parameter (a stateful optimizer after
    /// at least one step); the record is checked before burn reads it
    /// ([`crate::optim::check_record`]).
    pub fn load_optimizer_state(
        &mut self,
        layer: usize,
        bytes: Vec<u8>,
        stateful: bool,
    ) -> Result<(), String> {
        let j = layer - self.layers.start;
        let params: Vec<(u64, Vec<usize>)> = named_params(&self.modules[j])
            .into_iter()
            .map(|p| (crate::params::param_id_value(layer, &p.path), p.shape))
            .collect();
        crate::optim::check_record(&bytes, &params, stateful)?;
        self.optims[j].load(bytes)
    }

    /// Replaces layer `layer`'s parameters (by path); every parameter must be present with its shape.
    pub fn load_layer_parameters(
        &mut self,
        layer: usize,
        values: &std::collections::HashMap<String, NamedParam>,
    ) -> Result<(), String> {
        let j = layer - self.layers.start;
        let mut loader = crate::params::LoadValues::new(values);
        self.modules[j] = self.modules[j].clone().map(&mut loader);
        if loader.problems.is_empty() {
            Ok(())
        } else {
            Err(loader.problems.join("; "))
        }
    }

    /// The global gradient norm gradients are clipped to, if any.
    pub fn clip_grad_norm(&self) -> Option<f64> {
        self.clip_grad_norm
    }

    /// Whether the optimizer keeps state per parameter (Adam, SGD with momentum).
    pub fn stateful_optimizer(&self) -> bool {
        self.stateful_optimizer
    }

    /// Continues from `step` steps done (after loading a checkpoint).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Each layer's parameters, keyed by global layer index.
    pub fn parameters(&self) -> Vec<(usize, Vec<NamedParam>)> {
        self.layers
            .clone()
            .zip(&self.modules)
            .map(|(i, m)| (i, named_params(m)))
            .collect()
    }
}
