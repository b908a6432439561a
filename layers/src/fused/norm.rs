//! The RMS norm on flex's f32 storage as one autodiff node: burn composes it of six tracked ops
//! (square, mean, add, sqrt, divide, scale), each an allocation and a pass over the
//! activations, forward and backward.

use super::backend::{Shared, contiguous, from_vec, rows_parallel, values};
use super::simd;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};

/// What the norm adds to a backend ([`super::rms_norm`] routes other tensors to burn's).
#[backend_extension(Flex, Autodiff)]
pub trait Norm: Backend {
    /// `(x / sqrt(mean(x²) + eps)) · gamma` over `x`'s last axis (`gamma`'s length).
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
}

/// Rows per partial sum of gamma's gradient: the partials are fixed blocks of rows added in
/// order, so the gradient has the same bits on any thread count.
const GAMMA_BLOCK: usize = 32;

/// The output and each row's rms.
fn forward(x: &FlexTensor, gamma: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let (xs, w) = (values(x), values(gamma));
    let d = w.len();
    let rows = xs.len() / d;
    let (mut out, mut rms) = (vec![0.0; xs.len()], vec![0.0; rows]);
    let (o, r) = (
        Shared(out.as_mut_ptr(), out.len()),
        Shared(rms.as_mut_ptr(), rows),
    );
    rows_parallel(rows, d, |span| {
        // SAFETY: rows_parallel hands out disjoint ranges.
        let (o, r) = unsafe { (o.range(span.start * d..span.end * d), r.range(span.clone())) };
        simd::rms_norm_rows(&xs[span.start * d..span.end * d], w, o, r, eps);
    });
    (from_vec(out, x), rms)
}

/// The input's and gamma's gradients.
fn backward(x: &FlexTensor, gamma: &FlexTensor, rms: &[f32], grad: FlexTensor) -> [FlexTensor; 2] {
    let grad = contiguous(grad);
    let (xs, w, g) = (values(x), values(gamma), values(&grad));
    let d = w.len();
    let rows = xs.len() / d;
    let mut dx = vec![0.0; xs.len()];
    let o = Shared(dx.as_mut_ptr(), dx.len());
    rows_parallel(rows, d, |span| {
        let at = span.start * d..span.end * d;
        // SAFETY: rows_parallel hands out disjoint ranges.
        let out = unsafe { o.range(at.clone()) };
        simd::rms_norm_backward_rows(&xs[at.clone()], w, &g[at], &rms[span], out);
    });
    let blocks = rows.div_ceil(GAMMA_BLOCK);
    let mut partials = vec![0.0; blocks * d];
    let p = Shared(partials.as_mut_ptr(), partials.len());
    rows_parallel(blocks, GAMMA_BLOCK * d, |span| {
        for b in span {
            let r = b * GAMMA_BLOCK..((b + 1) * GAMMA_BLOCK).min(rows);
            let at = r.start * d..r.end * d;
            // SAFETY: each block writes its own partial.
            let part = unsafe { p.range(b * d..(b + 1) * d) };
            simd::rms_norm_gamma_rows(&xs[at.clone()], &g[at], &rms[r], part);
        }
    });
    let mut d_gamma = vec![0.0; d];
    for part in partials.chunks_exact(d) {
        d_gamma.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
    }
    [from_vec(dx, x), from_vec(d_gamma, gamma)]
}

impl Norm for Flex {
    fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f32) -> FlexTensor {
        forward(&contiguous(x), &contiguous(gamma), eps).0
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// The input, gamma and each row's rms.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, rms) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let [dx, d_gamma] = backward(&x, &gamma, &rms, grad);
        let [x_node, gamma_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<Flex>(node.id, d_gamma);
        }
    }
}

impl<C: CheckpointStrategy> Norm for Autodiff<Flex, C> {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let ((x, x_node), (gamma, gamma_node)) = (x.into_parts(), gamma.into_parts());
        let (x, gamma) = (contiguous(x), contiguous(gamma));
        let (out, rms) = forward(&x, &gamma, eps);
        match RmsNormBackward
            .prepare::<C>([x_node, gamma_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, rms), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}
