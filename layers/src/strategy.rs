//! How layers' linear products take their weight gradients: chosen here, once, from the
//! schedule and the devices, and asked by both the stages (which run it) and the planner (which
//! costs its time and memory).
//!
//! * [`WeightGrads::InBackward`]: burn's backward computes every gradient in one pass.
//! * [`WeightGrads::PerMicrobatch`]: the backward (B) computes input gradients only; a later
//!   W instruction computes the weight gradients of that micro-batch (ZB-H1, decision 0009).
//! * [`WeightGrads::PerStep`]: input gradients in the backward; weight gradients once per step
//!   over every micro-batch's rows, layer by layer (`train.batch_weight_grads`, decision 0013) —
//!   for products on `[rows, in]` only: on token sequences (`[batch, tokens, in]`) batching
//!   measured no faster and kept twice the peak memory (decision 0016), so theirs stay in the
//!   backward.

use crate::def::Product;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightGrads {
    InBackward,
    PerMicrobatch,
    PerStep,
}

impl WeightGrads {
    /// The strategy of a training run: the schedule's own W pass wins (it needs per-micro-batch
    /// weight gradients); else `batch_weight_grads`.
    pub fn choose(schedule_splits_w: bool, batch_weight_grads: bool) -> WeightGrads {
        if schedule_splits_w {
            WeightGrads::PerMicrobatch
        } else if batch_weight_grads {
            WeightGrads::PerStep
        } else {
            WeightGrads::InBackward
        }
    }

    /// The default of `train.batch_weight_grads` when unwritten: on where it is measured faster
    /// (every device a CPU, decision 0013) and the schedule does not split W itself.
    pub fn batch_by_default(schedule_splits_w: bool, all_cpu: bool) -> bool {
        !schedule_splits_w && all_cpu
    }

    /// Whether any product may take its weight gradients outside the backward.
    pub fn defers(self) -> bool {
        self != WeightGrads::InBackward
    }

    /// Whether a product on `[rows, in]` (`sequence = false`) or on `[batch, tokens, in]`
    /// (`true`) takes its weight gradients outside the backward.
    pub fn defers_input(self, sequence: bool) -> bool {
        match self {
            WeightGrads::InBackward => false,
            WeightGrads::PerMicrobatch => true,
            WeightGrads::PerStep => !sequence,
        }
    }

    /// Bytes a deferred product keeps per sample until its W (its input and its output's
    /// gradient, `elem_bytes` each); 0 when it is not deferred.
    pub fn kept_bytes(self, p: &Product, elem_bytes: u64) -> u64 {
        if self.defers_input(p.sequence) {
            p.kept_elements() * elem_bytes
        } else {
            0
        }
    }

    /// The FLOPs (per sample) the backward no longer runs for `p`, and what W runs instead:
    /// the weight-gradient product (as big as the forward). ZB-H1's W on token sequences also
    /// re-runs the forward product, to reproduce burn's own rounding of an unsplit backward
    /// (see `products::weight_grads`).
    pub fn moved_flops(self, p: &Product) -> (f64, f64) {
        match self {
            _ if !self.defers_input(p.sequence) => (0.0, 0.0),
            WeightGrads::PerMicrobatch if p.sequence => (p.flops(), 2.0 * p.flops()),
            _ => (p.flops(), p.flops()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_wins_then_the_flag() {
        assert_eq!(WeightGrads::choose(true, true), WeightGrads::PerMicrobatch);
        assert_eq!(WeightGrads::choose(false, true), WeightGrads::PerStep);
        assert_eq!(WeightGrads::choose(false, false), WeightGrads::InBackward);
        assert!(!WeightGrads::batch_by_default(true, true));
        assert!(WeightGrads::batch_by_default(false, true));
        assert!(!WeightGrads::batch_by_default(false, false));
    }

    #[test]
    fn costs_follow_the_strategy() {
        let p = Product {
            name: "linear",
            rows: 4,
            d_in: 8,
            d_out: 2,
            sequence: true,
        };
        let rows = Product {
            sequence: false,
            ..p
        };
        assert_eq!(WeightGrads::InBackward.kept_bytes(&p, 4), 0);
        assert_eq!(WeightGrads::PerMicrobatch.kept_bytes(&p, 4), 4 * 10 * 4);
        assert_eq!(WeightGrads::PerStep.kept_bytes(&rows, 4), 4 * 10 * 4);
        assert_eq!(WeightGrads::PerStep.kept_bytes(&p, 4), 0);
        assert_eq!(WeightGrads::PerMicrobatch.moved_flops(&p), (128.0, 256.0));
        assert_eq!(
            WeightGrads::PerMicrobatch.moved_flops(&rows),
            (128.0, 128.0)
        );
        assert_eq!(WeightGrads::PerStep.moved_flops(&p), (0.0, 0.0));
    }
}
