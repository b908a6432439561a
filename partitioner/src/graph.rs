//! The layer graph: one node per layer, one edge per tensor a layer consumes from another.
//!
//! Models from topology files are chains, but the graph is general: a skip connection is an
//! edge from an earlier layer to a later one, and a cut between stages carries every tensor
//! produced before it and consumed after it (each tensor once, however many layers use it).

pub use crate::layers::{ACT_BYTES, TOKEN_BYTES};
use crate::layers::{LayerCost, LayerKind};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;

/// A layer with its shapes and estimated per-sample cost.
#[derive(Debug, Clone, Serialize)]
pub struct LayerNode {
    pub name: String,
    pub kind: LayerKind,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub cost: LayerCost,
}

/// Layers in execution order; node `i` is layer `i`.
#[derive(Debug, Clone)]
pub struct LayerGraph {
    pub graph: DiGraph<LayerNode, u64>,
    /// Bytes per sample of the model input (fed to layer 0 from the data loader).
    pub input_bytes: u64,
}

impl LayerGraph {
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn layer(&self, i: usize) -> &LayerNode {
        &self.graph[NodeIndex::new(i)]
    }

    pub fn layers(&self) -> impl Iterator<Item = &LayerNode> {
        self.graph.node_weights()
    }

    /// The tensors a partition cuts (`None` for a chain, whose cuts carry one tensor each),
    /// with `microbatch` samples each.
    pub fn cuts(&self, microbatch: u64) -> Option<crate::partition::GraphCuts> {
        let sources: Vec<Vec<usize>> = self
            .graph
            .node_indices()
            .map(|n| {
                let mut s: Vec<usize> = self
                    .graph
                    .edges_directed(n, petgraph::Direction::Incoming)
                    .map(|e| e.source().index())
                    .collect();
                s.sort_unstable();
                s
            })
            .collect();
        let chain = sources
            .iter()
            .enumerate()
            .all(|(i, s)| s.is_empty() && i == 0 || s.as_slice() == [i.wrapping_sub(1)]);
        if chain {
            return None;
        }
        let bytes = self
            .layers()
            .map(|l| l.cost.activation_bytes.saturating_mul(microbatch))
            .collect();
        Some(crate::partition::GraphCuts::new(bytes, sources))
    }

    /// Adds a skip connection: layer `to` also consumes layer `from`'s output.
    pub fn add_skip(&mut self, from: usize, to: usize) {
        assert!(
            from < to && to < self.len(),
            "a skip goes forward inside the model"
        );
        let bytes = self.layer(from).cost.activation_bytes;
        self.graph
            .add_edge(NodeIndex::new(from), NodeIndex::new(to), bytes);
    }

    /// `cut[c]` = bytes per sample crossing a cut before layer `c` (`cut[0] = cut[n] = 0`).
    /// O(N + E): each produced tensor crosses every cut up to its last consumer.
    pub fn cut_bytes(&self) -> Vec<u64> {
        let n = self.len();
        let mut diff = vec![0i128; n + 2];
        for node in self.graph.node_indices() {
            let u = node.index();
            let last = self.graph.edges(node).map(|e| e.target().index()).max();
            if let Some(v) = last {
                let bytes = self.graph.edges(node).next().map_or(0, |e| *e.weight());
                // Crosses cuts u+1 ..= v.
                diff[u + 1] += bytes as i128;
                diff[v + 1] -= bytes as i128;
            }
        }
        let mut cut = vec![0u64; n + 1];
        let mut acc = 0i128;
        for (c, slot) in cut.iter_mut().enumerate() {
            acc += diff[c];
            *slot = acc as u64;
        }
        cut[0] = 0;
        cut[n] = 0;
        cut
    }
}
