//! Fused CPU kernels for the transformer blocks' element-wise work: SwiGLU (`silu(gate)·up`),
//! the causal, scaled softmax of attention scores, the rotary embedding's rotation and the RMS
//! norm, forward and backward in one pass each with a vectorised `exp` ([`simd`]), and matrix
//! products written straight into their result ([`product`]). On flex in f32 they run as one autodiff node each; on
//! every other backend or dtype (CUDA, half precision) the same formula runs as burn's ops.
//!
//! The kernels round differently from burn's ops (their `exp` is within 2 ulp of libm's), so a
//! model computes the same numbers on any split, thread count or machine, but not bit for bit
//! what it computed before they existed.

mod backend;
mod norm;
mod product;
pub mod simd;

use backend::Fused;
use burn::backend::Dispatch;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::{silu, softmax};
use norm::Norm;
use product::Product;

/// Whether `t` runs the fused kernels: an f32 tensor on flex.
fn on_flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32 && t.device().inner() == Device::flex()
}

/// `lhs · rhs` (burn's `matmul`); on flex in f32 with the same leading dims, written straight
/// into its result ([`product`]: the same bits as flex's).
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    let (l, r) = (lhs.dims(), rhs.dims());
    // anything else (broadcast leading dims, a wrong inner dim) goes to burn, which broadcasts
    // or names the mismatch
    let fits = l[..D - 2] == r[..D - 2] && l[D - 1] == r[D - 2];
    if on_flex_f32(&lhs) && rhs.dtype() == DType::F32 && fits {
        return Tensor::from_dispatch(Dispatch::product(lhs.into_dispatch(), rhs.into_dispatch()));
    }
    lhs.matmul(rhs)
}

/// `x · W + b` over `x`'s last axis: burn's `Linear::forward` (its rows folded into one
/// product, as burn folds them), with the product through [`matmul`].
pub fn linear<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    let w = l.weight.val();
    let b = l.bias.as_ref().map(|b| b.val());
    linear_with(x, w, b)
}

/// [`linear`] with the parameters given as tensors (constants, or not).
pub fn linear_with<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    if !on_flex_f32(&x) {
        return burn::tensor::module::linear(x, w, b);
    }
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims.iter().product::<usize>() / d_in;
    let mut y = matmul(x.reshape([rows, d_in]), w);
    if let Some(b) = b {
        y = y + b.unsqueeze_dim(0);
    }
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// `m` (burn's `RmsNorm`) on `x`: one node on flex in f32 ([`norm`]), burn's ops elsewhere.
pub fn apply_rms_norm<const D: usize>(m: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let gamma = m.gamma.val();
    let [d] = gamma.dims();
    assert_eq!(
        x.dims()[D - 1],
        d,
        "an RMS norm over {d} features on {:?}",
        x.dims()
    );
    if on_flex_f32(&x) && gamma.dtype() == DType::F32 {
        let (x, gamma) = (x.into_dispatch(), gamma.into_dispatch());
        return Tensor::from_dispatch(Dispatch::rms_norm(x, gamma, m.epsilon as f32));
    }
    m.forward(x)
}

/// `silu(gate) · up`.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if on_flex_f32(&gate) && up.dtype() == DType::F32 && gate.dims() == up.dims() {
        return Tensor::from_dispatch(Dispatch::swiglu(gate.into_dispatch(), up.into_dispatch()));
    }
    silu(gate) * up
}

/// Softmax over the last axis of `scale · scores`, where `scores` is `[b, heads, t, t]` and
/// query i sees keys 0..=i (the others get probability 0).
pub fn causal_softmax(scores: Tensor<4>, scale: f64) -> Tensor<4> {
    let [.., tq, tk] = scores.dims();
    assert_eq!(tq, tk, "a causal softmax over {tq} queries and {tk} keys");
    if on_flex_f32(&scores) {
        return Tensor::from_dispatch(Dispatch::causal_softmax(
            scores.into_dispatch(),
            scale as f32,
        ));
    }
    let scores = scores * scale;
    // The mask in the scores' dtype (in f16 its -1e9 becomes -inf, which softmax takes).
    let mask = causal_mask(tq, &scores.device()).cast(scores.dtype());
    softmax(scores + mask, 3)
}

/// `x·cos + rotate_half(x)·sin` for `x` of `[b, heads, t, dh]` (any strides) and `[t, dh]`
/// tables, where `rotate_half([x1, x2]) = [−x2, x1]` over each head's halves (transformers'
/// rotary embedding). The tables get no gradient.
pub fn rotate_half(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    let [_, _, t, dh] = x.dims();
    let tables = [t, dh];
    assert!(
        dh % 2 == 0 && cos.dims() == tables && sin.dims() == tables,
        "rotary tables {:?} and {:?} for heads {:?} (want [t, dh], dh even)",
        cos.dims(),
        sin.dims(),
        x.dims()
    );
    if on_flex_f32(&x) && cos.dtype() == DType::F32 && sin.dtype() == DType::F32 {
        let (x, cos, sin) = (x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch());
        return Tensor::from_dispatch(Dispatch::rotate_half(x, cos, sin));
    }
    let [t, dh] = cos.dims();
    let (cos, sin) = (cos.reshape([1, 1, t, dh]), sin.reshape([1, 1, t, dh]));
    let half = dh / 2;
    let (x1, x2) = (
        x.clone().narrow(3, 0, half),
        x.clone().narrow(3, half, half),
    );
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// `[1, 1, t, t]`: 0 where key j ≤ query i, −1e9 after it.
fn causal_mask(t: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, vec![1, 1, t, t]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.73).sin() * 3.0)
            .collect()
    }

    fn tensor<const D: usize>(shape: [usize; D], seed: f32, device: &Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(values(n, seed), shape.to_vec()), device)
    }

    fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) {
        let (got, want) = (
            got.into_data().try_to_vec::<f32>().unwrap(),
            want.into_data().try_to_vec::<f32>().unwrap(),
        );
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    /// The fused node against burn's composition of the same formula, values and gradients,
    /// on a strided (swapped) input as attention hands it over.
    #[test]
    fn causal_softmax_node_equals_burns_composition() {
        let device = Device::flex().autodiff();
        // two leaves with the same values: one graph each (burn consumes a graph's tape)
        let (x, y) = (
            tensor([2, 5, 3, 5], 1.0, &device),
            tensor([2, 5, 3, 5], 1.0, &device),
        );
        let (x, y) = (x.require_grad(), y.require_grad());
        let w = tensor([2, 3, 5, 5], 7.0, &device);
        let fused = causal_softmax(x.clone().swap_dims(1, 2), 0.3);
        let mask = causal_mask(5, &device);
        let composed = softmax(y.clone().swap_dims(1, 2) * 0.3 + mask, 3);
        let g_fused = (fused.clone() * w.clone()).sum().backward();
        let g_composed = (composed.clone() * w).sum().backward();
        assert_close("probabilities", fused, composed);
        assert_close(
            "gradient",
            x.grad(&g_fused).unwrap(),
            y.grad(&g_composed).unwrap(),
        );
    }

    #[test]
    fn swiglu_node_equals_burns_composition() {
        let device = Device::flex().autodiff();
        let gate = tensor([3, 4, 7], 2.0, &device).require_grad();
        let up = tensor([3, 4, 7], 5.0, &device).require_grad();
        let w = tensor([3, 4, 7], 9.0, &device);
        assert!(on_flex_f32(&gate), "the test must reach the fused node");
        let (gate2, up2) = (
            gate.clone().detach().require_grad(),
            up.clone().detach().require_grad(),
        );
        let g_fused = (swiglu(gate.clone(), up.clone()) * w.clone())
            .sum()
            .backward();
        let g_composed = (silu(gate2.clone()) * up2.clone() * w).sum().backward();
        assert_close(
            "d gate",
            gate.grad(&g_fused).unwrap(),
            gate2.grad(&g_composed).unwrap(),
        );
        assert_close(
            "d up",
            up.grad(&g_fused).unwrap(),
            up2.grad(&g_composed).unwrap(),
        );
        // without autodiff, on a strided gate
        let flex = Device::flex();
        let (g, u) = (
            tensor([7, 4], 2.0, &flex).transpose(),
            tensor([4, 7], 5.0, &flex),
        );
        assert_close("values", swiglu(g.clone(), u.clone()), silu(g) * u);
    }

    #[test]
    fn rotate_half_node_equals_burns_composition() {
        let device = Device::flex().autodiff();
        let (b, h, t, dh) = (2, 3, 5, 4);
        // the heads as attention hands them over: a transposed view of [b, t, h, dh]
        let x = tensor([b, t, h, dh], 3.0, &device).require_grad();
        let y = x.clone().detach().require_grad();
        let (cos, sin) = (tensor([t, dh], 4.0, &device), tensor([t, dh], 6.0, &device));
        let w = tensor([b, h, t, dh], 8.0, &device);
        let fused = rotate_half(x.clone().swap_dims(1, 2), cos.clone(), sin.clone());
        let (c4, s4) = (cos.reshape([1, 1, t, dh]), sin.reshape([1, 1, t, dh]));
        let y4 = y.clone().swap_dims(1, 2);
        let (y1, y2) = (y4.clone().narrow(3, 0, 2), y4.clone().narrow(3, 2, 2));
        let composed = y4 * c4 + Tensor::cat(vec![y2.neg(), y1], 3) * s4;
        let g_fused = (fused.clone() * w.clone()).sum().backward();
        let g_composed = (composed.clone() * w).sum().backward();
        assert_close("rotated", fused, composed);
        assert_close(
            "gradient",
            x.grad(&g_fused).unwrap(),
            y.grad(&g_composed).unwrap(),
        );
    }

    /// Bit for bit flex's `matmul`, values and both gradients, batched, on a transposed view.
    #[test]
    fn product_is_flexs_matmul_bit_for_bit() {
        let device = Device::flex().autodiff();
        let a = tensor([2, 3, 9, 5], 1.0, &device).require_grad();
        let b = tensor([2, 3, 7, 5], 2.0, &device).require_grad();
        let (a2, b2) = (
            a.clone().detach().require_grad(),
            b.clone().detach().require_grad(),
        );
        let w = tensor([2, 3, 9, 7], 3.0, &device);
        let fused = matmul(a.clone(), b.clone().swap_dims(2, 3));
        let flex = a2.clone().matmul(b2.clone().swap_dims(2, 3));
        let bits = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let g_fused = (fused.clone() * w.clone()).sum().backward();
        let g_flex = (flex.clone() * w).sum().backward();
        assert_eq!(bits(fused), bits(flex), "values");
        assert_eq!(
            bits(a.grad(&g_fused).unwrap()),
            bits(a2.grad(&g_flex).unwrap()),
            "d lhs"
        );
        assert_eq!(
            bits(b.grad(&g_fused).unwrap()),
            bits(b2.grad(&g_flex).unwrap()),
            "d rhs"
        );
        // a linear layer through it, against burn's
        let flex = Device::flex();
        let l = burn::nn::LinearConfig::new(5, 4).init(&flex);
        let x = tensor([3, 6, 5], 4.0, &flex);
        let (ours, burns) = (linear(&l, x.clone()), l.forward(x));
        assert_eq!(
            ours.into_data().try_to_vec::<f32>().unwrap(),
            burns.into_data().try_to_vec::<f32>().unwrap()
        );
    }

    /// burn's RmsNorm, values and both gradients; and the same bits on 1 and 3 threads (150 Ki
    /// values: the rows split in two).
    #[test]
    fn rms_norm_node_equals_burns_and_ignores_the_thread_count() {
        let device = Device::flex().autodiff();
        let mut m = burn::nn::RmsNormConfig::new(256)
            .with_epsilon(1e-5)
            .init(&device);
        m.gamma = burn::module::Param::from_tensor(tensor([256], 5.0, &device));
        let run = |fused: bool| {
            let x = tensor([3, 200, 256], 1.0, &device).require_grad();
            let y = if fused {
                apply_rms_norm(&m, x.clone())
            } else {
                m.forward(x.clone())
            };
            let grads = (y.clone() * tensor([3, 200, 256], 2.0, &device))
                .sum()
                .backward();
            let gamma = m.gamma.val().grad(&grads).unwrap();
            (y, x.grad(&grads).unwrap(), gamma)
        };
        let (ours, burns) = (run(true), run(false));
        assert_close("normed", ours.0.clone(), burns.0);
        assert_close("d x", ours.1.clone(), burns.1);
        let (a, b) = (ours.2.clone().into_data(), burns.2.into_data());
        let (a, b) = (
            a.try_to_vec::<f32>().unwrap(),
            b.try_to_vec::<f32>().unwrap(),
        );
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
                "d gamma[{i}]: {a} vs {b}"
            );
        }
        let bits = |t: (Tensor<3>, Tensor<3>, Tensor<1>)| {
            let v = |d: TensorData| d.try_to_vec::<f32>().unwrap();
            (v(t.0.into_data()), v(t.1.into_data()), v(t.2.into_data()))
        };
        let three = rayon_core::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(
            bits(three.install(|| run(true))),
            bits(ours),
            "3 threads against 1"
        );
    }
}
