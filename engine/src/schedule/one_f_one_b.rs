//! 1F1B with a flush at the end of the step (PipeDream-Flush; Narayanan et al., 2021; the
//! schedule of Megatron-LM and DeepSpeed's `TrainSchedule`).

use super::{Instr, backward, forward};

/// Stage `k`'s instructions: `w = min(K−k−1, M)` warm-up forwards, then forward and backward
/// alternating, then the remaining `w` backwards, then the optimizer step. At most `w + 1 ≤ K−k`
/// micro-batches are alive at once.
pub fn one_f_one_b(k: usize, stages: usize, microbatches: usize) -> Vec<Instr> {
    let m = microbatches as u32;
    let warmup = (stages - k - 1).min(microbatches) as u32;
    let mut out = Vec::with_capacity(6 * microbatches + 1);
    for mb in 0..warmup {
        forward(&mut out, k, stages, mb);
    }
    for i in 0..m - warmup {
        forward(&mut out, k, stages, warmup + i);
        backward(&mut out, k, stages, i);
    }
    for mb in m - warmup..m {
        backward(&mut out, k, stages, mb);
    }
    out.push(Instr::OptimizerStep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::compute_order;
    use Instr::*;

    #[test]
    fn literal_instruction_lists() {
        // K = 2, M = 3.
        assert_eq!(
            one_f_one_b(0, 2, 3),
            vec![
                Forward(0),
                SendAct(0),
                Forward(1),
                SendAct(1),
                RecvGrad(0),
                Backward(0),
                Forward(2),
                SendAct(2),
                RecvGrad(1),
                Backward(1),
                RecvGrad(2),
                Backward(2),
                OptimizerStep
            ]
        );
        assert_eq!(
            one_f_one_b(1, 2, 3),
            vec![
                RecvAct(0),
                Forward(0),
                Backward(0),
                SendGrad(0),
                RecvAct(1),
                Forward(1),
                Backward(1),
                SendGrad(1),
                RecvAct(2),
                Forward(2),
                Backward(2),
                SendGrad(2),
                OptimizerStep
            ]
        );
    }

    #[test]
    fn compute_order_k4_m8() {
        let expected = [
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7 step",
            "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7 step",
            "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7 step",
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 step",
        ];
        for (k, e) in expected.iter().enumerate() {
            assert_eq!(compute_order(&one_f_one_b(k, 4, 8)), *e, "stage {k}");
        }
    }

    #[test]
    fn fewer_microbatches_than_stages() {
        assert_eq!(compute_order(&one_f_one_b(0, 4, 2)), "F0 F1 B0 B1 step");
    }
}
