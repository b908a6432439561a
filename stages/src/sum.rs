//! Full sums whose value does not depend on the compute threads. burn's flex backend sums a
//! contiguous f32 tensor of 4 Mi elements or more on rayon, combining chunk sums in a tree
//! that depends on the pool's size and on which thread stole which half (decision 0019);
//! summing along a dimension never splits. Below that size `sum` is one pass in order, and is
//! kept, so figures of smaller tensors are those of every earlier release.

use burn::tensor::Tensor;

/// flex's threshold for its parallel full sum (`burn-flex` `ops/reduce.rs`).
pub const PARALLEL_SUM_ELEMENTS: usize = 4 * 1024 * 1024;

/// The sum of every element of `t`, in an order fixed by its shape alone.
pub fn ordered_sum<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    if n < PARALLEL_SUM_ELEMENTS {
        t.sum()
    } else {
        t.reshape([n]).sum_dim(0)
    }
}

/// The mean of every element of `t`, in an order fixed by its shape alone.
pub fn ordered_mean<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    if n < PARALLEL_SUM_ELEMENTS {
        t.mean()
    } else {
        t.reshape([n]).mean_dim(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn on(threads: usize, f: impl FnOnce() -> Vec<f32> + Send) -> Vec<f32> {
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(f)
    }

    #[test]
    fn big_sums_are_the_same_on_any_thread_count() {
        let device = Default::default();
        let n = PARALLEL_SUM_ELEMENTS + 12_345;
        let t: Tensor<2> = Tensor::random([n / 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let data: TensorData = t.to_data();
        let run = |threads| {
            let data = data.clone();
            on(threads, move || {
                let t: Tensor<2> = Tensor::from_data(data, &Default::default());
                let s = ordered_sum(t.clone()).into_data().try_to_vec::<f32>();
                let m = ordered_mean(t).into_data().try_to_vec::<f32>();
                vec![s.unwrap()[0], m.unwrap()[0]]
            })
        };
        let one = run(1);
        for _ in 0..3 {
            assert_eq!(run(2), one);
            assert_eq!(run(4), one);
        }
    }
}
