//! Losses on the last stage's output.

use crate::act::Act;
use crate::sum::ordered_mean;
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
            (Act::F2(a), Act::F2(b)) => ordered_mean((a.clone() - b.clone()).powi_scalar(2)),
            (Act::F3(a), Act::F3(b)) => ordered_mean((a.clone() - b.clone()).powi_scalar(2)),
            (Act::F4(a), Act::F4(b)) => ordered_mean((a.clone() - b.clone()).powi_scalar(2)),
            _ => panic!(
                "mse target shape {:?} does not match output {:?}",
                y.dims(),
                out.dims()
            ),
        },
        _ => panic!("loss target does not match output {:?}", output.dims()),
    }
}

/// One validation micro-batch's sums, still on the device: the loss summed over its samples
/// (the batch mean × rows, so means over uneven micro-batches come out right), the number of
/// correct argmax predictions (none for mse), and the rows and predictions counted.
pub struct EvalSums {
    pub loss_sum: Tensor<1>,
    pub correct: Option<Tensor<1>>,
    pub rows: u64,
    pub predictions: u64,
}

/// [`EvalSums`] of `output` against `target`.
pub fn eval_sums(output: &Act, target: &Target) -> EvalSums {
    let rows = output.dims()[0] as u64;
    let loss_sum = loss(output, target).mul_scalar(rows as f32);
    let hits = |logits: Tensor<2>, ids: Tensor<1, Int>| {
        let [n, _] = logits.dims();
        logits.argmax(1).reshape([n]).equal(ids).int().sum().float()
    };
    let (correct, predictions) = match (output, target) {
        (Act::F2(logits), Target::Classes(ids)) => (Some(hits(logits.clone(), ids.clone())), rows),
        (Act::F3(logits), Target::Tokens(ids)) => {
            let [b, t, v] = logits.dims();
            let flat = logits.clone().reshape([b * t, v]);
            (
                Some(hits(flat, ids.clone().reshape([b * t]))),
                (b * t) as u64,
            )
        }
        _ => (None, 0),
    };
    EvalSums {
        loss_sum,
        correct,
        rows,
        predictions,
    }
}

/// One evaluation's results.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalFigures {
    /// Mean loss over the validation samples.
    pub loss: f64,
    /// Share of correct argmax predictions (per sample, or per token for token models);
    /// none for mse.
    pub accuracy: Option<f64>,
    /// Validation samples scored.
    pub rows: u64,
}

impl EvalFigures {
    /// Reads the micro-batches' sums off the device once and combines them in micro-batch
    /// order (so every split reports the same figures).
    pub fn of(sums: Vec<EvalSums>) -> EvalFigures {
        let (mut loss, mut correct, mut rows, mut predictions) = (0.0, 0.0, 0, 0);
        let mut scored = true;
        let total = |t: Tensor<1>| t.into_data().convert::<f64>().iter::<f64>().sum::<f64>();
        for s in sums {
            loss += total(s.loss_sum);
            match s.correct {
                Some(c) => correct += total(c),
                None => scored = false,
            }
            rows += s.rows;
            predictions += s.predictions;
        }
        EvalFigures {
            loss: loss / rows.max(1) as f64,
            accuracy: (scored && predictions > 0).then(|| correct / predictions as f64),
            rows,
        }
    }
}

fn cross_entropy(logits: Tensor<2>, ids: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    ordered_mean(logp.gather(1, ids.reshape([n, 1]))).neg()
}
