//! Tied embeddings (`model.tie_word_embeddings`): the embedding (the first layer) and the head
//! (the last, a `linear` without bias) each keep a copy of one weight, the head's transposed
//! (Megatron's embedding group). The copies start equal; each step the executor sums their
//! gradients (in the embedding's layout) and gives the sum to both, so both take the same
//! update and never drift. The global gradient norm counts the weight once, at the embedding.

use super::Stage;
use crate::params::{NamedParam, named_params, param_id};
use burn::module::ParamId;
use burn::prelude::*;
use std::collections::HashMap;

/// The two layers sharing a weight and its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tie {
    pub embedding: usize,
    pub head: usize,
    /// [vocab, dim]: the embedding's layout, in which the gradients are summed.
    pub shape: [usize; 2],
}

impl Tie {
    pub fn of(topo: &brigade_partitioner::Topology) -> Option<Tie> {
        let (embedding, head) = topo.model.tied_layers()?;
        let node = topo.model.graph().layer(embedding);
        let vocab = node
            .kind
            .token_vocab()
            .expect("a tie starts at an embedding");
        let dim = *node.output_shape.last().expect("an embedding has a width");
        Some(Tie {
            embedding,
            head,
            shape: [vocab, dim],
        })
    }
}

/// Where a tied copy sits: its parameter and whether it is the head's (stored transposed).
fn tied_param(layer: usize, tie: Tie) -> (ParamId, bool) {
    if layer == tie.embedding {
        (param_id(layer, "embedding.weight"), false)
    } else {
        (param_id(layer, "linear.weight"), true)
    }
}

impl Stage {
    /// The model's tie, if it ties its head to its embedding.
    pub fn tie(&self) -> Option<Tie> {
        self.tie
    }

    /// The tied layers this stage holds (the embedding, the head, both or neither).
    pub fn tied_layers_held(&self) -> Vec<usize> {
        self.tie
            .map(|t| [t.embedding, t.head])
            .into_iter()
            .flatten()
            .filter(|l| self.layers.contains(l))
            .collect()
    }

    /// The step's gradient of the tied copy at `layer` in the embedding's layout [vocab, dim],
    /// row-major (zeros when the step gave it none); settles the step's gradients.
    pub fn tied_grad(&mut self, layer: usize) -> Vec<f32> {
        let tie = self.tie.expect("a tied model");
        let [vocab, dim] = tie.shape;
        self.flush_batched_weights();
        let grads = match self.reduced.take() {
            Some(g) => g,
            None => self.accum.grads(),
        };
        let (id, head) = tied_param(layer, tie);
        let values = match grads.get::<2>(id) {
            Some(g) => {
                let g = if head { g.transpose() } else { g };
                g.into_data().convert::<f32>().iter::<f32>().collect()
            }
            None => vec![0.0; vocab * dim],
        };
        self.reduced = Some(grads);
        values
    }

    /// Gives the tied copy at `layer` the summed gradient `flat` ([`Stage::tied_grad`]'s
    /// layout).
    pub fn set_tied_grad(&mut self, layer: usize, flat: &[f32]) {
        let tie = self.tie.expect("a tied model");
        let [vocab, dim] = tie.shape;
        let (id, head) = tied_param(layer, tie);
        let mut grads = self.reduced.take().unwrap_or_default();
        let device = self.device.clone().inner();
        let g = Tensor::<2>::from_data(TensorData::new(flat.to_vec(), [vocab, dim]), &device);
        let g = if head { g.transpose() } else { g };
        grads.remove::<2>(id);
        grads.register::<2>(id, g);
        self.reduced = Some(grads);
    }

    /// A tied head starts as the embedding's initial weight,
    /// transposed: built here from the same seed as the embedding's stage builds it.
    pub(super) fn copy_tied_init(&mut self, topo: &brigade_partitioner::Topology) {
        let Some(Tie {
            embedding: e,
            head: h,
            ..
        }) = self.tie
        else {
            return;
        };
        if !self.layers.contains(&h) {
            return;
        }
        let graph = topo.model.graph();
        let node = graph.layer(e);
        let device = self.device.clone();
        let embedding = node
            .kind
            .init(&node.input_shape, topo.train.seed, e, &device);
        let weight = named_params(&embedding)
            .into_iter()
            .next()
            .expect("an embedding has a weight");
        let [vocab, dim] = [weight.shape[0], weight.shape[1]];
        let values = crate::hf::transpose(&weight.values, vocab, dim);
        let path = "linear.weight".to_string();
        let head = NamedParam {
            path: path.clone(),
            shape: vec![dim, vocab],
            values,
        };
        self.load_layer_parameters(h, &HashMap::from([(path, head)]))
            .expect("the head was checked to fit the embedding");
    }
}
