//! Layer kinds a topology may name, their shape inference and their estimated cost.
//!
//! Costs are per *sample*: the planner multiplies by the micro-batch size. Forward FLOPs count
//! a multiply-add as two; backward is taken as twice the forward (the usual estimate for
//! dense layers: one product for the input gradient, one for the weight gradient).

use serde::Serialize;

/// Bytes per element of an activation on the wire and in memory (f32).
pub const ACT_BYTES: u64 = 4;
/// Bytes per element of a token id input (i64).
pub const TOKEN_BYTES: u64 = 8;

/// One layer of a model, as validated from `model.layers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerKind {
    Linear {
        out: usize,
        bias: bool,
    },
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    LayerNorm {
        eps: f64,
    },
    Dropout {
        p: f64,
    },
    Conv2d {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    Flatten,
    Embedding {
        vocab: usize,
        dim: usize,
    },
    TransformerBlock {
        heads: usize,
        ff: usize,
    },
    /// Nearest-neighbour upsampling of `[c, h, w]` by `scale` in height and width.
    Upsample2d {
        scale: usize,
    },
    /// Merge: the element-wise sum of its inputs (all of one shape).
    Add,
    /// Merge: its inputs joined along sample dimension `dim` (0-based, batch excluded).
    Concat {
        dim: usize,
    },
}

/// Every kind name accepted in `kind = "..."`, for did-you-mean suggestions.
pub const KIND_NAMES: &[&str] = &[
    "linear",
    "relu",
    "gelu",
    "tanh",
    "sigmoid",
    "layer_norm",
    "dropout",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "flatten",
    "embedding",
    "transformer_block",
    "upsample2d",
    "add",
    "concat",
];

/// The parameter keys each kind accepts besides `kind` and `name`.
pub fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "linear" => &["out", "bias"],
        "layer_norm" => &["eps"],
        "dropout" => &["p"],
        "conv2d" => &["out", "kernel", "stride", "padding"],
        "max_pool2d" | "avg_pool2d" => &["kernel", "stride"],
        "embedding" => &["vocab", "dim"],
        "transformer_block" => &["heads", "ff"],
        "concat" => &["dim"],
        "upsample2d" => &["scale"],
        _ => &[],
    }
}

/// Estimated cost of one layer for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LayerCost {
    /// Trainable parameters.
    pub params: u64,
    /// Forward FLOPs per sample.
    pub forward_flops: f64,
    /// Bytes of the layer's output per sample (what crosses a cut after it).
    pub activation_bytes: u64,
    /// Bytes the layer keeps alive per sample until its backward (its output and internals).
    pub saved_bytes: u64,
}

impl LayerKind {
    /// The `kind = "..."` name.
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Linear { .. } => "linear",
            LayerKind::Relu => "relu",
            LayerKind::Gelu => "gelu",
            LayerKind::Tanh => "tanh",
            LayerKind::Sigmoid => "sigmoid",
            LayerKind::LayerNorm { .. } => "layer_norm",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::MaxPool2d { .. } => "max_pool2d",
            LayerKind::AvgPool2d { .. } => "avg_pool2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Embedding { .. } => "embedding",
            LayerKind::TransformerBlock { .. } => "transformer_block",
            LayerKind::Upsample2d { .. } => "upsample2d",
            LayerKind::Add => "add",
            LayerKind::Concat { .. } => "concat",
        }
    }

    /// Whether the layer merges several inputs (`add`, `concat`).
    pub fn is_merge(&self) -> bool {
        matches!(self, LayerKind::Add | LayerKind::Concat { .. })
    }

    /// A merge layer's output shape for inputs of shapes `inputs`, or why it cannot take them.
    pub fn merge_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        let first = inputs.first().ok_or("a merge needs inputs")?;
        match *self {
            LayerKind::Add => match inputs.iter().find(|s| *s != first) {
                Some(other) => Err(format!(
                    "add needs inputs of one shape, got {first:?} and {other:?}"
                )),
                None => Ok(first.clone()),
            },
            LayerKind::Concat { dim } => {
                if dim >= first.len() {
                    return Err(format!(
                        "concat along dim {dim}, but its inputs have {} dimensions ({first:?}); dims count from 0, batch excluded",
                        first.len()
                    ));
                }
                let mut out = first.clone();
                out[dim] = 0;
                for s in inputs {
                    let same_rest = s.len() == first.len()
                        && s.iter()
                            .zip(first)
                            .enumerate()
                            .all(|(d, (a, b))| d == dim || a == b);
                    if !same_rest {
                        return Err(format!(
                            "concat along dim {dim} needs inputs that differ only in that dimension, got {first:?} and {s:?}"
                        ));
                    }
                    out[dim] += s[dim];
                }
                Ok(out)
            }
            _ => Err(format!("{} is not a merge layer", self.name())),
        }
    }

    /// The output shape for one sample of shape `input`, or why this layer cannot take it.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let last = input.last().copied().unwrap_or(0);
        match *self {
            LayerKind::Linear { out, .. } => {
                if input.is_empty() {
                    return Err("linear needs an input with at least one dimension".into());
                }
                let mut s = input.to_vec();
                *s.last_mut().unwrap() = out;
                Ok(s)
            }
            LayerKind::Relu
            | LayerKind::Gelu
            | LayerKind::Tanh
            | LayerKind::Sigmoid
            | LayerKind::Dropout { .. }
            | LayerKind::Add
            | LayerKind::Concat { .. } => Ok(input.to_vec()),
            LayerKind::LayerNorm { .. } => {
                if input.is_empty() {
                    Err("layer_norm needs an input with at least one dimension".into())
                } else {
                    Ok(input.to_vec())
                }
            }
            LayerKind::Conv2d {
                out,
                kernel,
                stride,
                padding,
            } => {
                let [_, h, w] = chw(input, "conv2d")?;
                let oh = window_out(h + 2 * padding, kernel, stride, "conv2d")?;
                let ow = window_out(w + 2 * padding, kernel, stride, "conv2d")?;
                Ok(vec![out, oh, ow])
            }
            LayerKind::MaxPool2d { kernel, stride } | LayerKind::AvgPool2d { kernel, stride } => {
                let [c, h, w] = chw(input, self.name())?;
                let oh = window_out(h, kernel, stride, self.name())?;
                let ow = window_out(w, kernel, stride, self.name())?;
                Ok(vec![c, oh, ow])
            }
            LayerKind::Upsample2d { scale } => {
                let [c, h, w] = chw(input, "upsample2d")?;
                match (h.checked_mul(scale), w.checked_mul(scale)) {
                    (Some(oh), Some(ow)) => Ok(vec![c, oh, ow]),
                    _ => Err(format!("upsample2d: {h}×{w} times {scale} is too large")),
                }
            }
            LayerKind::Flatten => {
                if input.is_empty() {
                    Err("flatten needs an input with at least one dimension".into())
                } else {
                    Ok(vec![input.iter().product()])
                }
            }
            LayerKind::Embedding { dim, .. } => {
                if input.len() != 1 {
                    return Err(format!(
                        "embedding takes a sequence of token ids shaped [tokens], got {input:?}; \
                         it must be the first layer and model.input must be [sequence_length]"
                    ));
                }
                Ok(vec![input[0], dim])
            }
            LayerKind::TransformerBlock { heads, .. } => {
                if input.len() != 2 {
                    return Err(format!(
                        "transformer_block takes [tokens, model_dim], got {input:?}; put an embedding before it"
                    ));
                }
                if last % heads != 0 {
                    return Err(format!(
                        "transformer_block: model_dim {last} is not divisible by heads = {heads}"
                    ));
                }
                Ok(input.to_vec())
            }
        }
    }

    /// Estimated cost for one sample whose input has shape `input` (already validated).
    pub fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        let n_in: u64 = input.iter().product::<usize>() as u64;
        let n_out: u64 = output.iter().product::<usize>() as u64;
        let act = n_out * ACT_BYTES;
        let elementwise = |flops_per: f64, saved: u64| LayerCost {
            params: 0,
            forward_flops: flops_per * n_out as f64,
            activation_bytes: act,
            saved_bytes: saved,
        };
        match *self {
            LayerKind::Linear { out, bias } => {
                let d_in = *input.last().unwrap() as u64;
                let rows = n_in / d_in.max(1);
                LayerCost {
                    params: d_in * out as u64 + if bias { out as u64 } else { 0 },
                    forward_flops: 2.0 * (rows * d_in * out as u64) as f64,
                    activation_bytes: act,
                    saved_bytes: act,
                }
            }
            LayerKind::Relu => elementwise(1.0, act),
            LayerKind::Gelu => elementwise(8.0, act),
            LayerKind::Tanh | LayerKind::Sigmoid => elementwise(4.0, act),
            LayerKind::Dropout { .. } => elementwise(2.0, 2 * act),
            LayerKind::LayerNorm { .. } => LayerCost {
                params: 2 * *input.last().unwrap() as u64,
                forward_flops: 8.0 * n_out as f64,
                activation_bytes: act,
                saved_bytes: act,
            },
            LayerKind::Conv2d { out, kernel, .. } => {
                let c_in = input[0] as u64;
                let k2 = (kernel * kernel) as u64;
                LayerCost {
                    params: out as u64 * c_in * k2 + out as u64,
                    forward_flops: 2.0 * (c_in * k2) as f64 * n_out as f64,
                    activation_bytes: act,
                    saved_bytes: act,
                }
            }
            LayerKind::MaxPool2d { kernel, .. } | LayerKind::AvgPool2d { kernel, .. } => {
                elementwise((kernel * kernel) as f64, act)
            }
            LayerKind::Flatten | LayerKind::Concat { .. } => elementwise(0.0, 0),
            LayerKind::Add => elementwise(1.0, 0),
            LayerKind::Upsample2d { .. } => elementwise(1.0, 0),
            LayerKind::Embedding { vocab, dim } => LayerCost {
                params: (vocab * dim) as u64,
                forward_flops: n_out as f64,
                activation_bytes: act,
                saved_bytes: act,
            },
            LayerKind::TransformerBlock { heads, ff } => {
                let (t, d) = (input[0] as u64, input[1] as u64);
                let ff = ff as u64;
                let proj = 2 * t * d * (4 * d); // q, k, v and output projections
                let attn = 2 * 2 * t * t * d; // scores and weighted sum
                let mlp = 2 * 2 * t * d * ff;
                LayerCost {
                    params: 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d,
                    forward_flops: (proj + attn + mlp) as f64 + 30.0 * (t * d) as f64,
                    activation_bytes: act,
                    // q, k, v, attention probabilities, MLP hidden, norms and residuals.
                    saved_bytes: ACT_BYTES.saturating_mul(
                        8 * t * d
                            + (heads as u64)
                                .saturating_mul(t * t)
                                .saturating_add(2 * t * ff),
                    ),
                }
            }
        }
    }
}

fn chw(input: &[usize], kind: &str) -> Result<[usize; 3], String> {
    match input {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(format!(
            "{kind} takes an image shaped [channels, height, width], got {input:?}"
        )),
    }
}

fn window_out(size: usize, kernel: usize, stride: usize, kind: &str) -> Result<usize, String> {
    if kernel > size {
        return Err(format!(
            "{kind}: kernel {kernel} is larger than the (padded) input size {size}"
        ));
    }
    Ok((size - kernel) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_and_pool_shapes() {
        let conv = LayerKind::Conv2d {
            out: 8,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        assert_eq!(conv.output_shape(&[3, 32, 32]).unwrap(), vec![8, 32, 32]);
        let pool = LayerKind::MaxPool2d {
            kernel: 2,
            stride: 2,
        };
        assert_eq!(pool.output_shape(&[8, 32, 32]).unwrap(), vec![8, 16, 16]);
        assert_eq!(
            LayerKind::Flatten.output_shape(&[8, 16, 16]).unwrap(),
            vec![2048]
        );
        assert!(
            conv.output_shape(&[64])
                .unwrap_err()
                .contains("[channels, height, width]")
        );
    }

    #[test]
    fn linear_cost_counts_weights_and_bias() {
        let l = LayerKind::Linear {
            out: 10,
            bias: true,
        };
        let c = l.cost(&[64], &[10]);
        assert_eq!(c.params, 650);
        assert_eq!(c.forward_flops, 1280.0);
        assert_eq!(c.activation_bytes, 40);
    }

    #[test]
    fn transformer_checks_heads() {
        let t = LayerKind::TransformerBlock { heads: 3, ff: 64 };
        assert!(t.output_shape(&[16, 32]).unwrap_err().contains("divisible"));
    }
}
