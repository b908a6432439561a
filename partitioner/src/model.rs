//! A validated model: its input, its layers and their inputs, its loss, and the layer graph
//! built from them once.

use crate::graph::{ACT_BYTES, LayerGraph, LayerNode, TOKEN_BYTES};
use crate::layers::LayerKind;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// One sample's shape, batch excluded.
    pub input: Vec<usize>,
    pub layers: Vec<Layer>,
    pub loss: Loss,
    /// Where the model and its initial parameters came from, when `[model] hf` names a
    /// Hugging Face checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hf: Option<crate::hf::HfModel>,
    /// The last layer (a `linear` head) shares the first's weight (an `embedding`), transposed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tie_word_embeddings: bool,
    /// The layer graph (shapes, costs), built once when the model is.
    #[serde(skip)]
    graph: Arc<LayerGraph>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// `name` from the file, or `<kind><index>`.
    pub name: String,
    pub kind: LayerKind,
    /// The layers whose outputs this one takes (`inputs = [...]`), by index; empty: the layer
    /// before it (the first layer reads `model.input`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<usize>,
}

impl Model {
    /// A validated model (shapes consistent, inputs earlier layers) and its layer graph.
    pub fn new(input: Vec<usize>, layers: Vec<Layer>, loss: Loss) -> Model {
        let graph = Arc::new(LayerGraph::from_model(&input, &layers));
        Model {
            input,
            layers,
            loss,
            hf: None,
            tie_word_embeddings: false,
            graph,
        }
    }

    /// The layer graph: every layer's shapes and cost, and the tensors between layers. Built
    /// once with the model; everything downstream reads this one.
    pub fn graph(&self) -> &LayerGraph {
        &self.graph
    }

    /// The layers whose outputs layer `i` takes, in order (empty for the first layer, which
    /// reads the model input).
    pub fn sources(&self, i: usize) -> Vec<usize> {
        self.layers[i].sources(i)
    }

    /// The vocabulary of the first layer when it reads token ids (an embedding).
    pub fn token_vocab(&self) -> Option<usize> {
        self.layers.first()?.kind.token_vocab()
    }

    /// Whether the first layer takes token ids rather than f32 features.
    pub fn token_input(&self) -> bool {
        self.token_vocab().is_some()
    }

    /// The (embedding, head) layers sharing one weight, when the model ties them.
    pub fn tied_layers(&self) -> Option<(usize, usize)> {
        self.tie_word_embeddings.then(|| (0, self.layers.len() - 1))
    }

    /// Whether every layer takes the one before it (no skip connections).
    pub fn is_chain(&self) -> bool {
        self.layers.iter().all(|l| l.inputs.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy against class ids (per sample, or per token for [tokens, vocab]).
    CrossEntropy,
    /// Mean squared error against a target shaped like the output.
    Mse,
}

impl Layer {
    /// The layers whose outputs this layer, at index `i`, takes, in order (empty for the first
    /// layer, which reads the model input).
    pub fn sources(&self, i: usize) -> Vec<usize> {
        match &self.inputs {
            v if !v.is_empty() => v.clone(),
            _ if i == 0 => Vec::new(),
            _ => vec![i - 1],
        }
    }
}

impl LayerGraph {
    /// Builds the graph of a validated model's layers (shapes were checked when it was loaded);
    /// [`Model::graph`] is the one built for a model.
    pub fn from_model(input: &[usize], layers: &[Layer]) -> Self {
        let mut graph = DiGraph::new();
        let shape = input.to_vec();
        let token_input = layers
            .first()
            .is_some_and(|l| l.kind.token_vocab().is_some());
        let input_bytes = shape.iter().product::<usize>() as u64
            * if token_input { TOKEN_BYTES } else { ACT_BYTES };
        let mut outputs: Vec<Vec<usize>> = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let sources = layer.sources(i);
            let input_shape = sources
                .first()
                .map_or(shape.clone(), |&j| outputs[j].clone());
            let out = if layer.kind.is_merge() {
                let ins: Vec<Vec<usize>> = sources.iter().map(|&j| outputs[j].clone()).collect();
                layer.kind.merge_shape(&ins)
            } else {
                layer.kind.output_shape(&input_shape)
            }
            .expect("validated topology has consistent shapes");
            let cost = layer.kind.cost(&input_shape, &out);
            let node = graph.add_node(LayerNode {
                name: layer.name.clone(),
                kind: layer.kind.clone(),
                input_shape,
                output_shape: out.clone(),
                cost,
            });
            for j in sources {
                let p = NodeIndex::new(j);
                graph.add_edge(p, node, graph[p].cost.activation_bytes);
            }
            outputs.push(out);
        }

        LayerGraph { graph, input_bytes }
    }
}

/// One tensor crossing between chunks: layer `tensor`'s output, made in chunk `from` and taken
/// by a layer of chunk `to` (sent once however many of `to`'s layers take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crossing {
    pub from: usize,
    pub to: usize,
    pub tensor: usize,
}

/// Every tensor crossing between chunks holding the contiguous layer `ranges` of `model`, in
/// (from, to, tensor) order: for a chain, crossing i joins chunk i to chunk i + 1.
pub fn crossings(model: &Model, ranges: &[std::ops::Range<usize>]) -> Vec<Crossing> {
    let chunk_of = |l: usize| ranges.iter().position(|r| r.contains(&l));
    let mut out: Vec<Crossing> = Vec::new();
    for l in 0..model.layers.len() {
        let Some(to) = chunk_of(l) else { continue };
        for t in model.sources(l) {
            match chunk_of(t) {
                Some(from) if from != to => {
                    let c = Crossing {
                        from,
                        to,
                        tensor: t,
                    };
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(widths: &[usize]) -> LayerGraph {
        let layers = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| Layer {
                name: format!("l{i}"),
                kind: LayerKind::Linear(crate::layers::kinds::linear::Linear {
                    out: w,
                    bias: true,
                }),
                inputs: Vec::new(),
            })
            .collect();
        Model::new(vec![8], layers, Loss::Mse).graph().clone()
    }

    #[test]
    fn chain_cuts_carry_the_previous_output() {
        let g = chain(&[16, 32, 4]);
        assert_eq!(g.cut_bytes(), vec![0, 64, 128, 0]);
    }

    #[test]
    fn skip_connection_crosses_every_cut_it_spans() {
        let mut g = chain(&[16, 32, 4, 4]);
        g.add_skip(0, 3); // layer 0's 16 floats also feed layer 3
        // cut 1: l0 out (64); cut 2: l1 out (128) + l0 out (64); cut 3: l2 out (16) + l0 out (64).
        assert_eq!(g.cut_bytes(), vec![0, 64, 192, 80, 0]);
    }
}
