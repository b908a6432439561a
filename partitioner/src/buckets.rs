//! Gradient buckets of data parallelism: which layers' gradients the replicas sum together,
//! and what the summing costs beyond the work it overlaps. One rule for the stages that cut
//! the buckets and the planner that prices them.

/// Cuts layers into buckets of at least `bucket_bytes` (the last may be smaller), last layer
/// first — the order backward makes gradients final. `bytes[j]`: layer j's gradient bytes;
/// returns the layer indices of each bucket in the order its buffer lays them out.
pub fn cut(bytes: &[u64], bucket_bytes: u64) -> Vec<Vec<usize>> {
    let mut buckets = Vec::new();
    let (mut open, mut size) = (Vec::new(), 0u64);
    for j in (0..bytes.len()).rev() {
        open.push(j);
        size += bytes[j];
        if size >= bucket_bytes {
            buckets.push(std::mem::take(&mut open));
            size = 0;
        }
    }
    if !open.is_empty() {
        buckets.push(open);
    }
    buckets
}

/// Buckets made one after another (`work_ms[i]` to make bucket i: its weight products, its
/// read-out) and each summed as soon as it is made and the previous one is done
/// (`reduce_ms[i]`): the milliseconds from the last bucket made to the last one summed —
/// the reduction that no work hides.
pub fn exposed_ms(work_ms: &[f64], reduce_ms: &[f64]) -> f64 {
    let (mut made, mut summed) = (0.0f64, 0.0f64);
    for (w, r) in work_ms.iter().zip(reduce_ms) {
        made += w;
        summed = summed.max(made) + r;
    }
    (summed - made).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_from_the_last_layer_and_close_once_full() {
        assert_eq!(cut(&[4, 0, 4, 0, 4], 8), vec![vec![4, 3, 2], vec![1, 0]]);
        assert_eq!(cut(&[4, 4, 4], 4), vec![vec![2], vec![1], vec![0]]);
        assert_eq!(cut(&[4, 4, 4], u64::MAX), vec![vec![2, 1, 0]]);
        assert_eq!(cut(&[], 4), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn only_the_reduction_past_the_work_is_exposed() {
        // No work to hide behind: all of it.
        assert_eq!(exposed_ms(&[0.0, 0.0], &[3.0, 5.0]), 8.0);
        // Each bucket's reduction hides behind making the next: the last one shows.
        assert_eq!(exposed_ms(&[4.0, 4.0, 4.0], &[3.0, 3.0, 3.0]), 3.0);
        // Reductions slower than the work queue up behind each other.
        assert_eq!(exposed_ms(&[1.0, 1.0], &[5.0, 5.0]), 9.0);
    }
}
