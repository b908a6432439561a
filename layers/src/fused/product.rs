//! Matrix products on flex's f32 storage written straight into their result.
//!
//! Why: flex's `matmul` allocates its result as a zeroed byte vector and then copies it into
//! an aligned one (`FlexTensor::empty` → `Bytes::from_bytes_vec`), so every product writes
//! its result three times: 6–7 % of a Llama step under `perf` (memset and memmove from
//! `matmul_gemm`), on the rank's own thread however many it has. Here the `gemm` crate (the
//! one flex calls, with the same arguments, so the same bits) writes into an f32 vector that
//! becomes the tensor's storage as it is. The backward is the same two products burn's autodiff
//! runs (`g · rhsᵀ`, `lhsᵀ · g`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DType, Flex, backend_extension};
use burn::tensor::{Bytes, Shape};

/// What the product adds to a backend (flex and autodiff over flex; [`super::matmul`] routes
/// every other tensor to burn's `matmul`).
#[backend_extension(Flex, Autodiff)]
pub trait Product: Backend {
    /// `lhs · rhs` over `[.., m, k]` and `[.., k, n]` with the same leading dims (any strides).
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Below this many multiply-adds a matrix runs on one thread (flex's `PARALLEL_THRESHOLD`).
const PARALLEL_OPS: usize = 192 * 192 * 192;
/// From this many multiply-adds in all, a batch of 4 or more splits its matrices over threads
/// instead (flex's `BATCH_PARALLEL_THRESHOLD`).
const BATCH_PARALLEL_OPS: usize = 128 * 128 * 128;

/// Offsets of each matrix of `layout` (its leading dims in row-major order), in elements.
fn matrix_offsets(layout: &Layout) -> Vec<isize> {
    let (shape, strides) = (layout.shape(), layout.strides());
    let lead = shape.len() - 2;
    let mut offsets = vec![layout.start_offset() as isize];
    for d in 0..lead {
        let (n, s) = (shape[d], strides[d]);
        offsets = offsets
            .iter()
            .flat_map(|&o| (0..n as isize).map(move |i| o + i * s))
            .collect();
    }
    offsets
}

/// The operands and the result, for threads that each write their own matrices of the result.
#[derive(Clone, Copy)]
struct Ptrs {
    lhs: *const f32,
    rhs: *const f32,
    out: *mut f32,
}
// SAFETY: the operands are only read; threads write disjoint matrices of the result.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

impl Ptrs {
    /// The whole value (a closure that reads `p.out` would capture the bare, unshareable field).
    fn get(&self) -> Self {
        *self
    }
}

fn flex_product(lhs: &FlexTensor, rhs: &FlexTensor) -> FlexTensor {
    let (l, r) = (lhs.layout(), rhs.layout());
    let rank = l.shape().len();
    let (m, k, n) = (
        l.shape()[rank - 2],
        l.shape()[rank - 1],
        r.shape()[rank - 1],
    );
    // gemm reads through raw pointers: operands that do not fit must stop here
    let (ls, rs) = (l.shape(), r.shape());
    assert!(
        rs.len() == rank && ls[..rank - 2] == rs[..rank - 2] && rs[rank - 2] == k,
        "a product of {ls:?} and {rs:?} (the caller checks)"
    );
    let (lo, ro) = (matrix_offsets(l), matrix_offsets(r));
    let [lrs, lcs, rrs, rcs] = [l, l, r, r]
        .iter()
        .zip([rank - 2, rank - 1, rank - 2, rank - 1])
        .map(|(x, d)| x.strides()[d])
        .collect::<Vec<_>>()[..]
    else {
        unreachable!()
    };
    let mut out: Vec<f32> = Vec::with_capacity(lo.len() * m * n);
    let p = Ptrs {
        lhs: lhs.storage::<f32>().as_ptr(),
        rhs: rhs.storage::<f32>().as_ptr(),
        out: out.as_mut_ptr(),
    };
    let one = |i: usize, par: gemm::Parallelism| {
        let p = p.get();
        // SAFETY: the offsets and strides are the operands' own (within their storage); the
        // result's matrix i is m·n values of `out`'s capacity, written and never read
        // (`read_dst` false); k = 0 is filled by hand below.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                p.out.add(i * m * n),
                1,
                n as isize,
                false,
                p.lhs.offset(lo[i]),
                lcs,
                lrs,
                p.rhs.offset(ro[i]),
                rcs,
                rrs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    };
    let threads = rayon_core::current_num_threads();
    let (per, batch) = (m * n * k, lo.len());
    if k == 0 {
        out.resize(batch * m * n, 0.0);
    } else if threads > 1 && batch >= 4 && batch * per >= BATCH_PARALLEL_OPS {
        let part = batch.div_ceil(threads);
        rayon_core::scope(|s| {
            for start in (part..batch).step_by(part) {
                let one = &one;
                s.spawn(move |_| {
                    (start..(start + part).min(batch)).for_each(|i| one(i, gemm::Parallelism::None))
                });
            }
            (0..part.min(batch)).for_each(|i| one(i, gemm::Parallelism::None));
        });
    } else {
        let par = if threads > 1 && per >= PARALLEL_OPS {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        (0..batch).for_each(|i| one(i, par));
    }
    // SAFETY: every matrix of the result was written above (or filled, for k = 0).
    unsafe { out.set_len(batch * m * n) };
    let mut dims = l.shape()[..rank - 1].to_vec();
    dims.push(n);
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(dims)),
        DType::F32,
    )
}

/// `t` with its last two dims swapped (a view).
fn transposed(t: &FlexTensor) -> FlexTensor {
    let rank = t.layout().shape().len();
    t.transpose(rank - 2, rank - 1)
}

impl Product for Flex {
    fn product(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        flex_product(&lhs, &rhs)
    }
}

#[derive(Debug)]
struct ProductBackward;

impl Backward<Flex, 2> for ProductBackward {
    /// The left operand where the right one needs a gradient, and the other way round.
    type State = (Option<FlexTensor>, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (lhs, rhs) = ops.state;
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                flex_product(
                    &grad,
                    &transposed(&rhs.expect("kept for the left gradient")),
                )
            },
            |grad| {
                flex_product(
                    &transposed(&lhs.expect("kept for the right gradient")),
                    &grad,
                )
            },
        );
    }
}

impl<C: CheckpointStrategy> Product for Autodiff<Flex, C> {
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        let ((lhs, lhs_node), (rhs, rhs_node)) = (lhs.into_parts(), rhs.into_parts());
        let out = flex_product(&lhs, &rhs);
        match ProductBackward
            .prepare::<C>([lhs_node, rhs_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (rhs_tracked.then_some(lhs), lhs_tracked.then_some(rhs));
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}
