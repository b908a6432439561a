//! Deterministic randomness that does not depend on how the model is split.
//!
//! Every random draw comes from a ChaCha8 stream keyed by what it is for — (seed, layer) for
//! initial weights, (seed, step, micro-batch, layer) for dropout masks — so a stage holding
//! layers 3..7 draws exactly what the whole model draws at those layers, whatever the split.

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Purposes of a stream, so streams for different uses never coincide.
#[derive(Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Init = 1,
    Dropout = 2,
    Data = 3,
    Teacher = 4,
    /// The order Parquet samples are read in, per epoch.
    Shuffle = 5,
}

/// A random stream for `purpose` keyed by `keys` (SplitMix64 over the keys).
pub fn rng(purpose: Stream, keys: &[u64]) -> ChaCha8Rng {
    let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ (purpose as u64);
    for &k in keys {
        h = splitmix(h ^ k);
    }
    ChaCha8Rng::seed_from_u64(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values uniform in [-bound, bound).
pub fn uniform_values(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
        .collect()
}

/// A tensor of the given shape, uniform in [-bound, bound).
pub fn uniform<const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    bound: f32,
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(uniform_values(rng, n, bound), shape.to_vec()),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed() {
        let a = uniform_values(&mut rng(Stream::Init, &[1, 2]), 4, 1.0);
        assert_eq!(a, uniform_values(&mut rng(Stream::Init, &[1, 2]), 4, 1.0));
        assert_ne!(a, uniform_values(&mut rng(Stream::Init, &[1, 3]), 4, 1.0));
        assert_ne!(
            a,
            uniform_values(&mut rng(Stream::Dropout, &[1, 2]), 4, 1.0)
        );
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
