//! GPipe: every forward, then every backward (Huang et al., 2019).

use super::{Instr, backward, forward};

/// Stage `k`'s instructions: F0 … F(M−1), B0 … B(M−1), optimizer step. Keeps M micro-batches
/// alive at its peak.
pub fn gpipe(k: usize, stages: usize, microbatches: usize) -> Vec<Instr> {
    let mut out = Vec::with_capacity(6 * microbatches + 1);
    for mb in 0..microbatches as u32 {
        forward(&mut out, k, stages, mb);
    }
    for mb in 0..microbatches as u32 {
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
        // K = 3, M = 2: first, middle and last stage.
        assert_eq!(
            gpipe(0, 3, 2),
            vec![
                Forward(0),
                SendAct(0),
                Forward(1),
                SendAct(1),
                RecvGrad(0),
                Backward(0),
                RecvGrad(1),
                Backward(1),
                OptimizerStep
            ]
        );
        assert_eq!(
            gpipe(1, 3, 2),
            vec![
                RecvAct(0),
                Forward(0),
                SendAct(0),
                RecvAct(1),
                Forward(1),
                SendAct(1),
                RecvGrad(0),
                Backward(0),
                SendGrad(0),
                RecvGrad(1),
                Backward(1),
                SendGrad(1),
                OptimizerStep
            ]
        );
        assert_eq!(
            gpipe(2, 3, 2),
            vec![
                RecvAct(0),
                Forward(0),
                RecvAct(1),
                Forward(1),
                Backward(0),
                SendGrad(0),
                Backward(1),
                SendGrad(1),
                OptimizerStep
            ]
        );
        // A single stage is the reference trainer's order.
        assert_eq!(
            gpipe(0, 1, 2),
            vec![
                Forward(0),
                Forward(1),
                Backward(0),
                Backward(1),
                OptimizerStep
            ]
        );
    }

    #[test]
    fn compute_order_k4_m8() {
        for k in 0..4 {
            assert_eq!(
                compute_order(&gpipe(k, 4, 8)),
                "F0 F1 F2 F3 F4 F5 F6 F7 B0 B1 B2 B3 B4 B5 B6 B7 step"
            );
        }
    }
}
