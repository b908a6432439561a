//! The fused kernels as a burn backend extension: run on flex's f32 storage, and recorded on
//! burn's autodiff graph as one node each, whose backward is the matching fused kernel.

use super::simd;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DType, Flex, backend_extension};
use burn::tensor::Bytes;

/// What the fused kernels add to a backend (only flex and autodiff over flex have them; the
/// callers in [`super`] route every other tensor to burn's own ops).
#[backend_extension(Flex, Autodiff)]
pub trait Fused: Backend {
    /// `silu(gate) · up`, element by element.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last axis of `scale · scores` (`[.., t, t]`), key j > query i masked.
    fn causal_softmax(scores: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
    /// `x·cos + rotate_half(x)·sin` over `[b, heads, t, dh]` with `[t, dh]` tables (constants:
    /// they get no gradient).
    fn rotate_half(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// A contiguous f32 copy-free view (a strided tensor is made contiguous first).
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "fused kernels take f32 (the callers check)"
    );
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The values of a contiguous f32 tensor (its storage may start before them or run past them).
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("made contiguous first");
    &t.storage::<f32>()[start..end]
}

/// A new tensor of `like`'s shape from `values`.
pub(super) fn from_vec(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    let shape = like.layout().shape().clone();
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `f` over `rows` rows of `width` values split over the calling thread's rayon pool (rows are
/// independent, so the split does not change a bit).
pub(super) fn rows_parallel(rows: usize, width: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let threads = rayon_core::current_num_threads();
    // below ~64 Ki values a second thread costs more than it saves
    let parts = threads.min(rows * width / (1 << 16)).max(1);
    if parts == 1 {
        return f(0..rows);
    }
    let per = rows.div_ceil(parts);
    rayon_core::scope(|s| {
        for start in (per..rows).step_by(per) {
            let f = &f;
            s.spawn(move |_| f(start..(start + per).min(rows)));
        }
        f(0..per.min(rows));
    });
}

/// A mutable slice handed to several threads, each writing only its own rows.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32, pub(super) usize);
// SAFETY: every user writes disjoint row ranges of it (rows_parallel's ranges do not overlap).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// SAFETY: callers take disjoint ranges.
    pub(super) unsafe fn range<'a>(self, r: std::ops::Range<usize>) -> &'a mut [f32] {
        assert!(r.end <= self.1);
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r.start), r.len()) }
    }
}

fn flex_swiglu(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (g, u) = (values(gate), values(up));
    let mut out = vec![0.0; g.len()];
    let o = Shared(out.as_mut_ptr(), out.len());
    let chunk = 1 << 14;
    rows_parallel(g.len().div_ceil(chunk), chunk, |r| {
        let span = r.start * chunk..(r.end * chunk).min(g.len());
        // SAFETY: rows_parallel hands out disjoint ranges.
        simd::swiglu(&g[span.clone()], &u[span.clone()], unsafe { o.range(span) });
    });
    from_vec(out, gate)
}

fn flex_swiglu_backward(
    gate: &FlexTensor,
    up: &FlexTensor,
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let grad = contiguous(grad);
    let (g, u, d) = (values(gate), values(up), values(&grad));
    let (mut dg, mut du) = (vec![0.0; g.len()], vec![0.0; g.len()]);
    let (dgs, dus) = (
        Shared(dg.as_mut_ptr(), dg.len()),
        Shared(du.as_mut_ptr(), du.len()),
    );
    let chunk = 1 << 14;
    rows_parallel(g.len().div_ceil(chunk), chunk, |r| {
        let span = r.start * chunk..(r.end * chunk).min(g.len());
        let (a, b) = (span.clone(), span.clone());
        // SAFETY: rows_parallel hands out disjoint ranges.
        let (dg, du) = unsafe { (dgs.range(a), dus.range(b)) };
        simd::swiglu_backward(&g[span.clone()], &u[span.clone()], &d[span], dg, du);
    });
    (from_vec(dg, gate), from_vec(du, gate))
}

fn last_dim(t: &FlexTensor) -> usize {
    *t.layout().shape().last().expect("a softmax over a scalar")
}

fn flex_causal_softmax(scores: &FlexTensor, scale: f32) -> FlexTensor {
    let (s, t) = (values(scores), last_dim(scores));
    let mut out = vec![0.0; s.len()];
    let o = Shared(out.as_mut_ptr(), out.len());
    rows_parallel(s.len() / t, t, |r| {
        let span = r.start * t..r.end * t;
        // SAFETY: rows_parallel hands out disjoint ranges.
        simd::causal_softmax_rows(
            &s[span.clone()],
            unsafe { o.range(span) },
            t,
            r.start,
            scale,
        );
    });
    from_vec(out, scores)
}

fn flex_softmax_backward(probs: &FlexTensor, grad: FlexTensor, scale: f32) -> FlexTensor {
    let grad = contiguous(grad);
    let (p, g, t) = (values(probs), values(&grad), last_dim(probs));
    let mut out = vec![0.0; p.len()];
    let o = Shared(out.as_mut_ptr(), out.len());
    rows_parallel(p.len() / t, t, |r| {
        let span = r.start * t..r.end * t;
        // SAFETY: rows_parallel hands out disjoint ranges.
        simd::softmax_backward_rows(
            &p[span.clone()],
            &g[span.clone()],
            unsafe { o.range(span) },
            t,
            scale,
        );
    });
    from_vec(out, probs)
}

/// Rows of `dh` values: `x`'s `[b, h, t]` rows read through its strides (attention's heads are a
/// transposed view of the projection; reading them in place saves the copy), row `r` at `t`
/// position `r % t`, written contiguously.
fn flex_rotate_half(x: FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> FlexTensor {
    let rows_in_place =
        x.layout().strides().last() == Some(&1) && x.layout().has_positive_strides();
    let x = if rows_in_place { x } else { x.to_contiguous() };
    let (shape, strides) = (x.layout().shape(), x.layout().strides());
    let [_, h, t, dh] = [shape[0], shape[1], shape[2], shape[3]];
    let [s0, s1, s2] = [strides[0], strides[1], strides[2]].map(|s| s as usize);
    let (data, start) = (x.storage::<f32>(), x.layout().start_offset());
    let (cos, sin) = (values(cos), values(sin));
    let mut out = vec![0.0; shape.iter().product()];
    let o = Shared(out.as_mut_ptr(), out.len());
    rows_parallel(out.len() / dh, dh, |rows| {
        for r in rows {
            let at = start + r / (h * t) * s0 + r / t % h * s1 + r % t * s2;
            let table = r % t * dh..(r % t + 1) * dh;
            // SAFETY: rows_parallel hands out disjoint ranges.
            let row = unsafe { o.range(r * dh..(r + 1) * dh) };
            simd::rotate_half_row(&data[at..at + dh], &cos[table.clone()], &sin[table], row);
        }
    });
    from_vec(out, &x)
}

fn flex_rotate_half_backward(grad: FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> FlexTensor {
    let grad = contiguous(grad);
    let shape = grad.layout().shape();
    let (t, dh) = (shape[2], shape[3]);
    let (g, cos, sin) = (values(&grad), values(cos), values(sin));
    let mut out = vec![0.0; g.len()];
    let o = Shared(out.as_mut_ptr(), out.len());
    rows_parallel(g.len() / dh, dh, |rows| {
        for r in rows {
            let (row, table) = (r * dh..(r + 1) * dh, r % t * dh..(r % t + 1) * dh);
            // SAFETY: rows_parallel hands out disjoint ranges.
            let out = unsafe { o.range(row.clone()) };
            simd::rotate_half_backward_row(&g[row], &cos[table.clone()], &sin[table], out);
        }
    });
    from_vec(out, &grad)
}

impl Fused for Flex {
    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        flex_swiglu(&contiguous(gate), &contiguous(up))
    }

    fn causal_softmax(scores: FlexTensor, scale: f32) -> FlexTensor {
        flex_causal_softmax(&contiguous(scores), scale)
    }

    fn rotate_half(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        flex_rotate_half(x, &contiguous(cos), &contiguous(sin))
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// The two inputs, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let (d_gate, d_up) = flex_swiglu_backward(&gate, &up, grad);
        let [gate_node, up_node] = ops.parents;
        if let Some(node) = gate_node {
            grads.register::<Flex>(node.id, d_gate);
        }
        if let Some(node) = up_node {
            grads.register::<Flex>(node.id, d_up);
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The probabilities and the scale.
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            flex_softmax_backward(&probs, grad, scale)
        });
    }
}

#[derive(Debug)]
struct RotateBackward;

impl Backward<Flex, 1> for RotateBackward {
    /// The cosine and sine tables.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            flex_rotate_half_backward(grad, &cos, &sin)
        });
    }
}

impl<C: CheckpointStrategy> Fused for Autodiff<Flex, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (gate, gate_node) = gate.into_parts();
        let (up, up_node) = up.into_parts();
        let (gate, up) = (contiguous(gate), contiguous(up));
        let out = flex_swiglu(&gate, &up);
        match SwigluBackward
            .prepare::<C>([gate_node, up_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((gate, up), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn causal_softmax(scores: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        let (scores, node) = scores.into_parts();
        let probs = flex_causal_softmax(&contiguous(scores), scale);
        match SoftmaxBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((probs.clone(), scale), probs),
            OpsKind::UnTracked(prep) => prep.finish(probs),
        }
    }

    fn rotate_half(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        let (cos, sin) = (
            contiguous(cos.into_parts().0),
            contiguous(sin.into_parts().0),
        );
        let out = flex_rotate_half(x, &cos, &sin);
        match RotateBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((cos, sin), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}
