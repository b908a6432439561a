//! ZB-H1's split backward for linear layers: B computes the input gradient only, W the
//! weight gradients later.
//!
//! burn's autodiff computes every gradient of a graph in one backward pass, so a layer whose
//! weight gradient is to be deferred is run with its parameters as constants (detached): the
//! backward then yields the input gradient alone. A zero "probe" tensor that requires grad is
//! added to the layer's output, so the same backward also yields the gradient of that output,
//! which W turns into the weight gradients (see [`weight_grads`]).
//! Other layer kinds (conv2d, layer_norm, embedding, transformer_block) keep their weight
//! gradients in B: their backward is not split (docs/performance.md).

use crate::act::Act;
use crate::layer::LayerModule;
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::prelude::*;

/// What W needs of one split layer of one micro-batch: the layer's input and, after B, the
/// gradient of its output.
pub struct Deferred {
    /// The layer's index within the stage.
    pub layer: usize,
    pub input: Act,
    /// Before B: the probe added to the output; after B: the output's gradient.
    pub probe_or_grad: Act,
}

/// The linear layer `l` on `x` with its parameters as constants, recording what W needs.
pub fn forward(l: &Linear, x: Act, layer: usize) -> (Act, Deferred) {
    // Constants: `detach` alone keeps a parameter (a leaf) requiring grad, and burn would then
    // compute the weight gradient in B anyway.
    let w = l.weight.val().detach().set_require_grad(false);
    let b = l
        .bias
        .as_ref()
        .map(|b| b.val().detach().set_require_grad(false));
    let (y, probe) = match &x {
        Act::F2(t) => {
            let y = burn::tensor::module::linear(t.clone(), w, b);
            let probe = Tensor::zeros(y.shape(), (&y.device(), y.dtype())).require_grad();
            (Act::F2(y + probe.clone()), Act::F2(probe))
        }
        Act::F3(t) => {
            let y = burn::tensor::module::linear(t.clone(), w, b);
            let probe = Tensor::zeros(y.shape(), (&y.device(), y.dtype())).require_grad();
            (Act::F3(y + probe.clone()), Act::F3(probe))
        }
        other => panic!("linear on {:?}", other.dims()),
    };
    let d = Deferred {
        layer,
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
pub fn forward_transposed(l: &Linear, x: Act, layer: usize) -> (Act, Deferred) {
    let w = l.weight.val().detach().set_require_grad(false);
    let b = l
        .bias
        .as_ref()
        .map(|b| b.val().detach().set_require_grad(false));
    let Act::F2(t) = &x else {
        panic!("the transposed linear takes [rows, in], got {:?}", x.dims())
    };
    let mut y = w
        .swap_dims(0, 1)
        .matmul(t.clone().swap_dims(0, 1))
        .swap_dims(0, 1);
    if let Some(b) = b {
        y = y + b.unsqueeze_dim(0);
    }
    let probe = Tensor::zeros(y.shape(), (&y.device(), y.dtype())).require_grad();
    let d = Deferred {
        layer,
        input: x.detach(),
        probe_or_grad: Act::F2(probe.clone()),
    };
    (Act::F2(y + probe), d)
}

/// W of one layer: the gradients of `master`'s parameters (f32) given the layer's input `x` and
/// output gradient `g`, both in the compute dtype; `module` is `master` in the compute dtype.
///
/// Both ways give the unsplit backward's gradients to the last bit:
/// * `[rows, in]` inputs: `xᵀ·g` and `Σ g`, the very products burn's backward of a 2-d linear
///   runs (one matmul, as big as the forward's);
/// * `[batch, tokens, in]` inputs: burn folds or batches that product by a backend policy
///   whose rounding a hand-written `xᵀ·g` does not reproduce, so W re-runs the layer's forward
///   product with the parameters tracked and the input constant and backpropagates `Σ y ⊙ g`
///   (whose gradient with respect to `y` is exactly `g`): burn's own backward, for one more
///   forward product.
pub fn weight_grads(
    master: &LayerModule,
    module: &LayerModule,
    x: &Act,
    g: &Act,
) -> GradientsParams {
    let l = module
        .linear
        .as_ref()
        .expect("only linear layers are split");
    match (x, g) {
        (Act::F2(x), Act::F2(g)) => {
            let m = master
                .linear
                .as_ref()
                .expect("only linear layers are split");
            let dtype = m.weight.val().dtype();
            let (x, g) = (x.clone().inner(), g.clone());
            let mut grads = GradientsParams::new();
            let dw = x.swap_dims(0, 1).matmul(g.clone());
            grads.register(m.weight.id, dw.cast(dtype));
            if let Some(bias) = &m.bias {
                let out = g.dims()[1];
                grads.register(bias.id, g.sum_dim(0).reshape([out]).cast(dtype));
            }
            grads
        }
        (Act::F3(x), Act::F3(g)) => {
            let root = (l.forward(x.clone()) * Tensor::from_inner(g.clone())).sum();
            GradientsParams::from_grads(root.backward(), master)
        }
        (x, g) => panic!("linear W of {:?} with gradient {:?}", x.dims(), g.dims()),
    }
}
