//! The fused kernels' arithmetic on f32 slices: a vectorisable `exp`, the SwiGLU product and
//! its gradients, the causal softmax rows and their gradients, and the rotary embedding's
//! `rotate_half` rotation and its transpose, and the RMS norm and its gradients.
//!
//! Why: burn's flex backend maps `exp` element by element through libm's scalar `expf` (7–14 %
//! of a Llama step, measured with `perf`; its masked scores took libm's slow underflow path
//! with errno on top), and autodiff composes softmax and SiLU out of five and three tracked
//! ops, each a pass over memory. Here each element is plain IEEE arithmetic with no branches,
//! so LLVM vectorises the loops; [`dispatch!`] compiles each kernel twice, once for AVX2 and
//! once for the baseline target, and picks at run time. Rust never contracts `a * b + c`
//! into an FMA, so both copies compute the same bits on any machine and any thread count.

/// Compiles `$body` (a kernel over slices) for AVX2 and for the baseline, and calls the AVX2
/// copy where the CPU has it.
macro_rules! dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so `x − n·ln 2` stays exact (Cephes' `expf`).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds to the nearest integer, which lands in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Below this `exp` is under f32's smallest normal number: it returns 0.
const UNDER: f32 = -87.336_55;
/// Above this `2^n` would overflow the exponent field: it returns +inf.
const OVER: f32 = 88.376_26;

/// e^x to within 2 ulp of libm's `expf` for normal results; 0 below −87.34 (where libm gives
/// subnormals), +inf above 88.38 (libm: above 88.72), NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let c = x.clamp(UNDER, OVER);
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // n sits in t's low mantissa bits: its integer value is t's bits minus ROUND's.
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let scaled = y * f32::from_bits(((n + 127) << 23) as u32);
    if x < UNDER {
        0.0
    } else if x > OVER {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        scaled
    }
}

/// The logistic function from `exp(−|x|)` (never overflows).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 { s } else { e * s }
}

dispatch! {
fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}
}

dispatch! {
fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
    let inputs = gate.iter().zip(up).zip(grad);
    for ((dg, du), ((&g, &u), &d)) in d_gate.iter_mut().zip(d_up.iter_mut()).zip(inputs) {
        let s = sigmoid(g);
        // d silu(g)/dg = s + g·s·(1 − s)
        *dg = d * u * (s + g * s * (1.0 - s));
        *du = d * g * s;
    }
}
}

/// Eight running lanes, combined in a fixed order: a reduction LLVM can vectorise (a single
/// running float cannot be reordered) that sums the same bits on every machine.
const LANES: usize = 8;

#[inline(always)]
fn fold_lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = f(*a, x);
        }
    }
    let mut total = acc.iter().fold(init, |t, &a| f(t, a));
    for &x in tail {
        total = f(total, x);
    }
    total
}

dispatch! {
fn causal_softmax_rows(scores: &[f32], out: &mut [f32], t: usize, first_row: usize, scale: f32) {
    for (r, (row, o)) in scores.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
        // Query position i sees keys 0..=i.
        let seen = (first_row + r) % t + 1;
        let (row, (o, masked)) = (&row[..seen], o.split_at_mut(seen));
        for (p, &s) in o.iter_mut().zip(row) {
            *p = s * scale;
        }
        let max = fold_lanes(o, f32::NEG_INFINITY, f32::max);
        o.iter_mut().for_each(|p| *p = exp(*p - max));
        let inv = 1.0 / fold_lanes(o, 0.0, |a, b| a + b);
        o.iter_mut().for_each(|p| *p *= inv);
        masked.fill(0.0);
    }
}
}

dispatch! {
fn softmax_backward_rows(probs: &[f32], grad: &[f32], out: &mut [f32], t: usize, scale: f32) {
    for ((p, g), o) in probs.chunks_exact(t).zip(grad.chunks_exact(t)).zip(out.chunks_exact_mut(t)) {
        // o holds p·g for the sum, then the gradient
        for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
            *o = p * g;
        }
        let dot = fold_lanes(o, 0.0, |a, b| a + b);
        for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
            *o = scale * p * (g - dot);
        }
    }
}
}

dispatch! {
fn rotate_half_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    // x·cos + rotate_half(x)·sin, rotate_half([x1, x2]) = [−x2, x1]; the same three roundings
    // as burn's `x * cos + cat(−x2, x1) * sin`
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] + -x2[i] * sin[i];
        o2[i] = x2[i] * cos[half + i] + x1[i] * sin[half + i];
    }
}
}

dispatch! {
fn rotate_half_backward_row(grad: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    // the transpose of the rotation: d x1 = g1·cos1 + g2·sin2, d x2 = g2·cos2 − g1·sin1
    let half = grad.len() / 2;
    let (g1, g2) = grad.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = g1[i] * cos[i] + g2[i] * sin[half + i];
        o2[i] = g2[i] * cos[half + i] - g1[i] * sin[i];
    }
}
}

dispatch! {
fn rms_norm_rows(x: &[f32], gamma: &[f32], out: &mut [f32], rms: &mut [f32], eps: f32) {
    // burn's RmsNorm: (x / sqrt(mean(x²) + eps)) · gamma; each row's rms kept for the backward
    let d = gamma.len();
    for ((row, o), r) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(rms.iter_mut()) {
        for (o, &v) in o.iter_mut().zip(row) {
            *o = v * v;
        }
        *r = (fold_lanes(o, 0.0, |a, b| a + b) / d as f32 + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(gamma) {
            *o = v / *r * w;
        }
    }
}
}

dispatch! {
fn rms_norm_backward_rows(x: &[f32], gamma: &[f32], grad: &[f32], rms: &[f32], dx: &mut [f32]) {
    // x̂ = x / rms, dx̂ = g · gamma: dx = (dx̂ − x̂ · mean(dx̂ · x̂)) / rms
    let d = gamma.len();
    let rows = x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(dx.chunks_exact_mut(d));
    for (((row, g), o), &r) in rows.zip(rms) {
        for (((o, &v), &g), &w) in o.iter_mut().zip(row).zip(g).zip(gamma) {
            *o = g * w * (v / r);
        }
        let c = fold_lanes(o, 0.0, |a, b| a + b) / d as f32;
        for (((o, &v), &g), &w) in o.iter_mut().zip(row).zip(g).zip(gamma) {
            *o = (g * w - v / r * c) / r;
        }
    }
}
}

dispatch! {
fn rms_norm_gamma_rows(x: &[f32], grad: &[f32], rms: &[f32], d_gamma: &mut [f32]) {
    // Σ over the rows, in row order, of g · x̂ (added to d_gamma)
    let d = d_gamma.len();
    for ((row, g), &r) in x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(rms) {
        for ((o, &v), &g) in d_gamma.iter_mut().zip(row).zip(g) {
            *o += g * (v / r);
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32 - b.to_bits() as i32).unsigned_abs()
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_its_normal_range() {
        let mut worst = 0;
        let mut x = UNDER + 0.01;
        while x < OVER - 0.01 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.000_37;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_ends_and_special_values() {
        for (x, want) in [
            (-1e9, 0.0),
            (-88.0, 0.0),
            (f32::NEG_INFINITY, 0.0),
            (89.0, f32::INFINITY),
        ] {
            assert_eq!(exp(x), want, "exp({x})");
        }
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn swiglu_and_its_gradient_match_the_formulas() {
        let gate = [-100.0f32, -3.0, -0.5, 0.0, 0.25, 2.0, 30.0];
        let up = [1.5f32, -2.0, 0.5, 4.0, -1.0, 3.0, 0.5];
        let grad = [0.5f32, 1.0, -2.0, 1.0, 3.0, -0.5, 2.0];
        let mut out = [0.0; 7];
        swiglu(&gate, &up, &mut out);
        let (mut dg, mut du) = ([0.0; 7], [0.0; 7]);
        swiglu_backward(&gate, &up, &grad, &mut dg, &mut du);
        for i in 0..7 {
            let (g, u, d) = (gate[i] as f64, up[i] as f64, grad[i] as f64);
            let s = 1.0 / (1.0 + (-g).exp());
            let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * (1.0 + b.abs());
            assert!(close(out[i], g * s * u), "silu·up at {g}: {}", out[i]);
            assert!(
                close(dg[i], d * u * (s + g * s * (1.0 - s))),
                "d gate at {g}: {}",
                dg[i]
            );
            assert!(close(du[i], d * g * s), "d up at {g}: {}", du[i]);
        }
    }

    #[test]
    fn causal_rows_see_only_earlier_keys_and_sum_to_one() {
        let t = 3;
        let scores: Vec<f32> = (0..2 * t * t)
            .map(|i| (i as f32 * 0.7).sin() * 4.0)
            .collect();
        let mut p = vec![f32::NAN; scores.len()];
        causal_softmax_rows(&scores, &mut p, t, 0, 0.5);
        for (r, row) in p.chunks(t).enumerate() {
            let i = r % t;
            assert!(
                row[i + 1..].iter().all(|&v| v == 0.0),
                "row {r} sees the future: {row:?}"
            );
            let s = &scores[r * t..r * t + i + 1];
            let m = s.iter().fold(f64::MIN, |m, &v| m.max(v as f64 * 0.5));
            let z: f64 = s.iter().map(|&v| (v as f64 * 0.5 - m).exp()).sum();
            for j in 0..=i {
                let want = (s[j] as f64 * 0.5 - m).exp() / z;
                assert!(
                    (row[j] as f64 - want).abs() < 1e-6,
                    "row {r} key {j}: {} vs {want}",
                    row[j]
                );
            }
        }
        // the same rows started one row later wrap their positions the same way
        let mut q = vec![0.0; t * t];
        causal_softmax_rows(&scores[t..t * t + t], &mut q, t, 1, 0.5);
        assert_eq!(q[..], p[t..t * t + t]);
    }

    #[test]
    fn softmax_gradient_is_scale_times_p_times_centred_grad() {
        let p = [0.2f32, 0.3, 0.5, 1.0, 0.0, 0.0];
        let g = [1.0f32, -1.0, 2.0, 0.5, 7.0, -3.0];
        let mut d = [0.0; 6];
        softmax_backward_rows(&p, &g, &mut d, 3, 0.5);
        let dot0 = 0.2 * 1.0 - 0.3 + 0.5 * 2.0;
        let want = [
            0.5 * 0.2 * (1.0 - dot0),
            0.5 * 0.3 * (-1.0 - dot0),
            0.5 * 0.5 * (2.0 - dot0),
            0.0,
            0.0,
            0.0,
        ];
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{d:?} vs {want:?}");
        }
    }

    #[test]
    fn rotation_backward_is_its_transpose() {
        // <rotate(x), g> = <x, rotate_backward(g)> for any x, g
        let (cos, sin) = ([0.3f32, -0.8, 0.6, 0.1], [0.9f32, 0.2, -0.4, 0.7]);
        let (x, g) = ([1.0f32, -2.0, 0.5, 3.0], [0.25f32, 1.5, -1.0, 2.0]);
        let (mut y, mut dx) = ([0.0; 4], [0.0; 4]);
        rotate_half_row(&x, &cos, &sin, &mut y);
        rotate_half_backward_row(&g, &cos, &sin, &mut dx);
        let want = [
            1.0 * 0.3 - 0.5 * 0.9,
            -2.0 * -0.8 - 3.0 * 0.2,
            0.5 * 0.6 + 1.0 * -0.4,
            3.0 * 0.1 + -2.0 * 0.7,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&y, &g) - dot(&x, &dx)).abs() < 1e-5);
    }
}
