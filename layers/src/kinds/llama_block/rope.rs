//! Rotary position embeddings' frequencies, computed in f32 the way transformers computes them
//! (`_compute_default_rope_parameters` and `_compute_llama3_parameters`), so brigade's rotations
//! round as Hugging Face's do.

use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

/// Llama 3's frequency scaling (`rope_scaling` with `rope_type = "llama3"`, key for key as in a
/// Hugging Face config): long wavelengths are slowed by `factor`, short ones kept, and the band
/// between blended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl RopeScaling {
    pub const KEYS: &'static [&'static str] = &[
        "rope_type",
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
    ];

    /// Reads the `rope_scaling` table; only `llama3` is represented exactly.
    pub fn parse(s: &Section) -> Result<Self, ConfigError> {
        let rope_type = s.req_str("rope_type", "\"llama3\"")?;
        if rope_type != "llama3" {
            return Err(s.err(
                "rope_type",
                format!("\"{rope_type}\" is not supported"),
                "brigade computes Llama 3's scaling (\"llama3\") exactly; remove rope_scaling for plain rotary embeddings.",
            ));
        }
        let positive = |key: &str| -> Result<f64, ConfigError> {
            let v = s
                .opt_f64(key)?
                .ok_or_else(|| s.err(key, "is missing", "llama3 scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings."))?;
            if !(v > 0.0 && v.is_finite()) {
                return Err(s.err(key, format!("must be positive, found {v}"), "Copy it from the model's config.json."));
            }
            Ok(v)
        };
        let (low, high) = (positive("low_freq_factor")?, positive("high_freq_factor")?);
        if high <= low {
            return Err(s.err(
                "high_freq_factor",
                format!("{high} must be above low_freq_factor = {low}"),
                "Llama 3 uses low_freq_factor = 1 and high_freq_factor = 4.",
            ));
        }
        let context = s.req_u64("original_max_position_embeddings", "8192")?;
        Ok(RopeScaling {
            rope_type: rope_type.to_string(),
            factor: positive("factor")?,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: s.positive(
                "original_max_position_embeddings",
                context,
                "It is the context length the model was pre-trained with.",
            )?,
        })
    }
}

/// The `head_dim / 2` inverse frequencies of rotary embeddings with base `theta`.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Vec<f32> {
    let base = theta as f32;
    let plain = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
    match scaling {
        None => plain.collect(),
        Some(s) => plain.map(|f| llama3(f, s)).collect(),
    }
}

/// One frequency under Llama 3's scaling, step for step as transformers computes it in f32.
fn llama3(inv_freq: f32, s: &RopeScaling) -> f32 {
    let (factor, low, high) = (s.factor as f32, s.low_freq_factor as f32, s.high_freq_factor as f32);
    let context = s.original_max_position_embeddings as f32;
    let (low_freq_wavelen, high_freq_wavelen) = (context / low, context / high);
    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
    let scaled = if wavelen > low_freq_wavelen { inv_freq / factor } else { inv_freq };
    // transformers' `~(wavelen < high) * ~(wavelen > low)`; wavelengths are finite.
    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
    if !medium {
        return scaled;
    }
    let smooth = (context / wavelen - low) / (high - low);
    (1.0 - smooth) * scaled / factor + smooth * scaled
}

/// `(cos, sin)` of every position `0..tokens`, each `[tokens, head_dim]` row-major, with the
/// frequencies repeated over both halves of the head (transformers' `rotate_half` layout).
pub fn tables(tokens: usize, freqs: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let head_dim = 2 * freqs.len();
    let (mut cos, mut sin) = (Vec::with_capacity(tokens * head_dim), Vec::with_capacity(tokens * head_dim));
    for p in 0..tokens {
        for _half in 0..2 {
            for &f in freqs {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3_scaling() -> RopeScaling {
        RopeScaling {
            rope_type: "llama3".into(),
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        }
    }

    #[test]
    fn plain_frequencies_fall_geometrically() {
        let f = inv_freq(8, 10_000.0, None);
        assert_eq!(f.len(), 4);
        for (i, want) in [1.0, 0.1, 0.01, 0.001].iter().enumerate() {
            assert!((f[i] - want).abs() <= want * 1e-6, "{i}: {} vs {want}", f[i]);
        }
    }

    /// Head size 8, base 10⁴, a 64-token context: wavelengths 6.3 (short: kept), 63
    /// (between 16 and 64: blended), 628 and 6283 (long: divided by 8).
    #[test]
    fn llama3_keeps_short_blends_middle_and_slows_long_waves() {
        let (plain, s) = (inv_freq(8, 10_000.0, None), llama3_scaling());
        let f = inv_freq(8, 10_000.0, Some(&s));
        assert_eq!(f[0], plain[0]);
        let smooth = (64.0 / (2.0 * std::f32::consts::PI / plain[1]) - 1.0) / 3.0;
        let blended = (1.0 - smooth) * plain[1] / 8.0 + smooth * plain[1];
        assert_eq!(f[1], blended);
        assert!(f[1] < plain[1] && f[1] > plain[1] / 8.0);
        assert_eq!(f[2], plain[2] / 8.0);
        assert_eq!(f[3], plain[3] / 8.0);
    }

    #[test]
    fn tables_repeat_the_frequencies_over_both_halves() {
        let (cos, sin) = tables(3, &[1.0, 0.5]);
        assert_eq!(cos.len(), 12);
        assert_eq!(cos[8..12], [2f32.cos(), 1f32.cos(), 2f32.cos(), 1f32.cos()]);
        assert_eq!(sin[0..4], [0.0; 4]);
    }
}
