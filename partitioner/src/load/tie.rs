//! `[model] tie_word_embeddings = true` (a Hugging Face config's `tie_word_embeddings`): the
//! output head shares the embedding's weight. The first layer must be an `embedding` and the
//! last a `linear` without bias from the embedding's width back to its vocabulary, so the head's
//! weight is the embedding's transposed.

use crate::LayerKind;
use crate::error::ConfigError;
use crate::model::Model;
use crate::reader::Section;

/// Checks that `m` can tie its head to its embedding.
pub(super) fn check(s: &Section, m: &Model) -> Result<(), ConfigError> {
    let key = "tie_word_embeddings";
    let graph = m.graph();
    let Some(LayerKind::Embedding(e)) = m.layers.first().map(|l| &l.kind) else {
        return Err(s.err(
            key,
            "needs an embedding as the first layer (its weight is the one shared)",
            "Start the model with `{ kind = \"embedding\", vocab = V, dim = D }`, or remove tie_word_embeddings.",
        ));
    };
    let last = graph.layer(graph.len() - 1);
    let fits = match &last.kind {
        LayerKind::Linear(l) => {
            !l.bias && l.out == e.vocab && last.input_shape.last() == Some(&e.dim)
        }
        _ => false,
    };
    if m.layers.len() < 2 || !fits {
        return Err(s.err(
            key,
            format!(
                "needs a last layer `linear` with out = {} (the vocabulary), bias = false, taking {} features (the embedding's dim); the last layer is `{}` taking {:?}",
                e.vocab,
                e.dim,
                last.name,
                last.input_shape
            ),
            "End the model with `{ kind = \"linear\", out = V, bias = false }` after a layer of width D, or remove tie_word_embeddings.",
        ));
    }
    Ok(())
}
