//! Losses on the last stage's output.

use crate::act::Act;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// What the last stage's output is compared with.
#[derive(Debug, Clone)]
pub enum Target {
    /// One class id per sample, for an output `[batch, classes]`.
    Classes(Tensor<1, Int>),
    /// One class id per token, for an output `[batch, tokens, vocab]`.
    Tokens(Tensor<2, Int>),
    /// Values shaped like the output (mse).
    Values(Act),
}

/// Mean softmax cross-entropy or mean squared error of one micro-batch, as a one-element tensor.
pub fn loss(output: &Act, target: &Target) -> Tensor<1> {
    match (output, target) {
        (Act::F2(logits), Target::Classes(ids)) => cross_entropy(logits.clone(), ids.clone()),
        (Act::F3(logits), Target::Tokens(ids)) => {
            let [b, t, v] = logits.dims();
            cross_entropy(
                logits.clone().reshape([b * t, v]),
                ids.clone().reshape([b * t]),
            )
        }
        (out, Target::Values(y)) => match (out, y) {
            (Act::F2(a), Act::F2(b)) => (a.clone() - b.clone()).powi_scalar(2).mean(),
            (Act::F3(a), Act::F3(b)) => (a.clone() - b.clone()).powi_scalar(2).mean(),
            (Act::F4(a), Act::F4(b)) => (a.clone() - b.clone()).powi_scalar(2).mean(),
            _ => panic!(
                "mse target shape {:?} does not match output {:?}",
                y.dims(),
                out.dims()
            ),
        },
        _ => panic!("loss target does not match output {:?}", output.dims()),
    }
}

fn cross_entropy(logits: Tensor<2>, ids: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, ids.reshape([n, 1])).mean().neg()
}
