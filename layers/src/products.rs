//! Linear products whose weight gradients are taken outside the backward (the burn side of
//! [`crate::strategy::WeightGrads`]).
//!
//! burn's autodiff computes every gradient of a graph in one backward pass, so a product whose
//! weight gradient is to be deferred is run with its parameters as constants (detached): the
//! backward then yields the input gradient alone. A zero "probe" tensor that requires grad is
//! added to the product's output, so the same backward also yields the gradient of that output,
//! which W turns into the weight gradients (see [`weight_grads`]).
//! Other layers' parameters (conv2d, layer_norm, embedding, a block's norms) keep their weight
//! gradients in the backward: theirs is not split (docs/performance.md).

use crate::act::Act;
use crate::fused::{linear, linear_with, matmul};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::prelude::*;

/// What W needs of one deferred product of one micro-batch: the product's input and, after B,
/// the gradient of its output.
pub struct Deferred {
    /// The layer's index within the stage.
    pub layer: usize,
    /// The product's name within the layer (`linear`, or a block's `query`, `up`, ...).
    pub product: &'static str,
    pub input: Act,
    /// Before B: the probe added to the output; after B: the output's gradient.
    pub probe_or_grad: Act,
}

/// The parameters of `l` as constants (`detach` alone keeps a parameter, a leaf, requiring
/// grad, and burn would then compute the weight gradient in B anyway).
fn constants(l: &Linear) -> (Tensor<2>, Option<Tensor<1>>) {
    let w = l.weight.val().detach().set_require_grad(false);
    let b = l
        .bias
        .as_ref()
        .map(|b| b.val().detach().set_require_grad(false));
    (w, b)
}

/// `y + probe` with a fresh zero probe that requires grad.
fn probed<const D: usize>(y: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    let probe = Tensor::zeros(y.shape(), (&y.device(), y.dtype())).require_grad();
    (y + probe.clone(), probe)
}

/// The product `l` on `x` with its parameters as constants, recording what W needs.
pub fn forward(l: &Linear, x: Act, layer: usize, product: &'static str) -> (Act, Deferred) {
    let (w, b) = constants(l);
    let (y, probe) = match &x {
        Act::F2(t) => {
            let (y, p) = probed(linear_with(t.clone(), w, b));
            (Act::F2(y), Act::F2(p))
        }
        Act::F3(t) => {
            let (y, p) = probed(linear_with(t.clone(), w, b));
            (Act::F3(y), Act::F3(p))
        }
        other => panic!("linear on {:?}", other.dims()),
    };
    let d = Deferred {
        layer,
        product,
        input: x.detach(),
        probe_or_grad: probe,
    };
    (y, d)
}

/// [`forward`] for `[rows, in]` inputs in the orientation flex's kernel is fastest at for a
/// micro-batch's few rows: `y = (Wᵀ·xᵀ)ᵀ + b` (76 against 50 GFLOP/s at 32 rows on 1024 × 1024,
/// `cargo bench --bench gemm_shapes`), whose backward gives the input gradient as `(W·gᵀ)ᵀ`
/// (89 against 49). The weight gradients are deferred to [`weight_grads`], run once per step
/// over every micro-batch's rows (`train.batch_weight_grads`).
pub fn forward_transposed(
    l: &Linear,
    x: Act,
    layer: usize,
    product: &'static str,
) -> (Act, Deferred) {
    let (w, b) = constants(l);
    let Act::F2(t) = &x else {
        panic!("the transposed linear takes [rows, in], got {:?}", x.dims())
    };
    let mut y = matmul(w.swap_dims(0, 1), t.clone().swap_dims(0, 1)).swap_dims(0, 1);
    if let Some(b) = b {
        y = y + b.unsqueeze_dim(0);
    }
    let (y, probe) = probed(y);
    let d = Deferred {
        layer,
        product,
        input: x.detach(),
        probe_or_grad: Act::F2(probe),
    };
    (Act::F2(y), d)
}

/// W of one product: the gradients of `master`'s parameters (f32) given the product's input `x`
/// and output gradient `g`, both in the compute dtype; `module` is `master` in the compute
/// dtype.
///
/// * `[rows, in]` inputs: `xᵀ·g` and `Σ g`, the very products burn's backward of a 2-d linear
///   runs (one matmul, as big as the forward's);
/// * `[batch, tokens, in]` inputs (ZB-H1's W; batching leaves these in the backward): burn
///   folds or batches that product by a backend policy whose rounding a hand-written `xᵀ·g`
///   does not reproduce, so W re-runs the forward product with the parameters tracked and the
///   input constant and backpropagates `Σ y ⊙ g` (whose gradient with respect to `y` is exactly
///   `g`): burn's own backward, for one more forward product — the one-rank reference runs
///   unsplit backwards.
pub fn weight_grads(master: &Linear, module: &Linear, x: &Act, g: &Act) -> GradientsParams {
    match (x, g) {
        (Act::F2(x), Act::F2(g)) => rows_grads(master, x.clone().inner(), g.clone()),
        (Act::F3(x), Act::F3(g)) => {
            let root = (linear(module, x.clone()) * Tensor::from_inner(g.clone())).sum();
            GradientsParams::from_grads(root.backward(), master)
        }
        (x, g) => panic!("linear W of {:?} with gradient {:?}", x.dims(), g.dims()),
    }
}

/// `xᵀ·g` and `Σ g` for `[rows, in]` and `[rows, out]`, in `master`'s dtype.
fn rows_grads(master: &Linear, x: Tensor<2>, g: Tensor<2>) -> GradientsParams {
    let dtype = master.weight.val().dtype();
    let mut grads = GradientsParams::new();
    let dw = matmul(x.swap_dims(0, 1), g.clone());
    grads.register(master.weight.id, dw.cast(dtype));
    if let Some(bias) = &master.bias {
        let out = g.dims()[1];
        grads.register(bias.id, g.sum_dim(0).reshape([out]).cast(dtype));
    }
    grads
}
