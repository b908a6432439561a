//! burn modules for every layer kind a topology accepts, initialised from (seed, layer index).

use crate::act::Act;
use crate::block::{TransformerBlock, layer_norm, linear};
use crate::init::{Stream, rng, uniform, uniform_values};
use crate::map_float;
use brigade_partitioner::LayerKind;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;

/// The parameters of one layer. Exactly the field its kind needs is set; parameter-free kinds
/// (activations, dropout, flatten) hold none. A struct of options rather than an enum keeps the
/// derived `Module` (visited by optimizers and checkpoints) simple.
#[derive(Module, Debug)]
pub struct LayerModule {
    pub linear: Option<Linear>,
    pub norm: Option<LayerNorm>,
    pub conv: Option<Conv2d>,
    pub max_pool: Option<MaxPool2d>,
    pub avg_pool: Option<AvgPool2d>,
    pub embedding: Option<Embedding>,
    pub block: Option<TransformerBlock>,
}

/// Where a forward happens, for the randomness that must not depend on the split.
#[derive(Debug, Clone, Copy)]
pub struct ForwardCtx {
    pub seed: u64,
    pub step: u64,
    pub microbatch: u64,
    /// Global layer index.
    pub layer: u64,
    /// Dropout is active only in training.
    pub train: bool,
}

impl LayerModule {
    /// A layer without parameters (a placeholder while a layer is being replaced).
    pub fn empty() -> Self {
        LayerModule {
            linear: None,
            norm: None,
            conv: None,
            max_pool: None,
            avg_pool: None,
            embedding: None,
            block: None,
        }
    }

    /// Layer `index` of the model, of `kind`, taking one sample of shape `input`; its weights are
    /// a pure function of (`seed`, `index`).
    pub fn init(
        kind: &LayerKind,
        input: &[usize],
        seed: u64,
        index: usize,
        device: &Device,
    ) -> Self {
        let mut r = rng(Stream::Init, &[seed, index as u64]);
        let mut m = Self::empty();
        match *kind {
            LayerKind::Linear { out, bias } => {
                m.linear = Some(linear(&mut r, *input.last().unwrap(), out, bias, device))
            }
            LayerKind::LayerNorm { eps } => {
                m.norm = Some(layer_norm(*input.last().unwrap(), eps, device))
            }
            LayerKind::Conv2d {
                out,
                kernel,
                stride,
                padding,
            } => {
                let c_in = input[0];
                let mut conv = Conv2dConfig::new([c_in, out], [kernel, kernel])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(
                        padding, padding, padding, padding,
                    ))
                    .init(device);
                let bound = 1.0 / ((c_in * kernel * kernel) as f32).sqrt();
                conv.weight =
                    Param::from_tensor(uniform(&mut r, [out, c_in, kernel, kernel], bound, device));
                conv.bias = Some(Param::from_tensor(uniform(&mut r, [out], bound, device)));
                m.conv = Some(conv);
            }
            LayerKind::MaxPool2d { kernel, stride } => {
                m.max_pool = Some(
                    MaxPool2dConfig::new([kernel, kernel])
                        .with_strides([stride, stride])
                        .init(),
                )
            }
            LayerKind::AvgPool2d { kernel, stride } => {
                m.avg_pool = Some(
                    AvgPool2dConfig::new([kernel, kernel])
                        .with_strides([stride, stride])
                        .init(),
                )
            }
            LayerKind::Embedding { vocab, dim } => {
                let mut e = EmbeddingConfig::new(vocab, dim).init(device);
                e.weight = Param::from_tensor(uniform(&mut r, [vocab, dim], 1.0, device));
                m.embedding = Some(e);
            }
            LayerKind::TransformerBlock { heads, ff } => {
                m.block = Some(TransformerBlock::new(&mut r, input[1], heads, ff, device))
            }
            LayerKind::Relu
            | LayerKind::Gelu
            | LayerKind::Tanh
            | LayerKind::Sigmoid
            | LayerKind::Dropout { .. }
            | LayerKind::Flatten
            | LayerKind::Add
            | LayerKind::Concat { .. }
            | LayerKind::Upsample2d { .. } => {}
        }
        m
    }

    /// A merge layer on its inputs (in the order its `inputs` lists them).
    pub fn merge(kind: &LayerKind, inputs: Vec<Act>) -> Act {
        match *kind {
            LayerKind::Add => inputs
                .into_iter()
                .reduce(|a, b| a + b)
                .expect("a merge has inputs"),
            // `dim` counts sample dimensions; the batch comes first.
            LayerKind::Concat { dim } => Act::cat(inputs, dim + 1),
            ref other => panic!("{} is not a merge layer", other.name()),
        }
    }

    /// Applies the layer. Shapes were validated with the topology, so a mismatch here is a bug.
    pub fn forward(&self, kind: &LayerKind, x: Act, ctx: &ForwardCtx) -> Act {
        match *kind {
            LayerKind::Linear { .. } => {
                let l = self.linear.as_ref().expect("linear layer");
                match x {
                    Act::F2(t) => Act::F2(l.forward(t)),
                    Act::F3(t) => Act::F3(l.forward(t)),
                    other => panic!("linear on {:?}", other.dims()),
                }
            }
            LayerKind::Relu => map_float!(x, |t| activation::relu(t)),
            LayerKind::Gelu => map_float!(x, |t| activation::gelu(t)),
            LayerKind::Tanh => map_float!(x, |t| activation::tanh(t)),
            LayerKind::Sigmoid => map_float!(x, |t| activation::sigmoid(t)),
            LayerKind::LayerNorm { .. } => {
                let n = self.norm.as_ref().expect("layer_norm layer");
                map_float!(x, |t| n.forward(t))
            }
            LayerKind::Dropout { p } => {
                if !ctx.train || p == 0.0 {
                    return x;
                }
                let dims = x.dims();
                let device = match &x {
                    Act::F2(t) => t.device(),
                    Act::F3(t) => t.device(),
                    Act::F4(t) => t.device(),
                    Act::Tokens(t) => t.device(),
                };
                let mut r = rng(
                    Stream::Dropout,
                    &[ctx.seed, ctx.step, ctx.microbatch, ctx.layer],
                );
                let keep = 1.0 / (1.0 - p) as f32;
                let mask: Vec<f32> = uniform_values(&mut r, dims.iter().product(), 1.0)
                    .into_iter()
                    .map(|u| {
                        if (u + 1.0) * 0.5 < p as f32 {
                            0.0
                        } else {
                            keep
                        }
                    })
                    .collect();
                let dtype = x.float_dtype();
                match (x, Act::from_f32(mask, &dims, &device).cast(dtype)) {
                    (Act::F2(t), Act::F2(m)) => Act::F2(t * m),
                    (Act::F3(t), Act::F3(m)) => Act::F3(t * m),
                    (Act::F4(t), Act::F4(m)) => Act::F4(t * m),
                    (other, _) => panic!("dropout on {:?}", other.dims()),
                }
            }
            LayerKind::Conv2d { .. } => match x {
                Act::F4(t) => Act::F4(self.conv.as_ref().expect("conv2d layer").forward(t)),
                other => panic!("conv2d on {:?}", other.dims()),
            },
            LayerKind::MaxPool2d { .. } => match x {
                Act::F4(t) => Act::F4(self.max_pool.as_ref().expect("max_pool2d layer").forward(t)),
                other => panic!("max_pool2d on {:?}", other.dims()),
            },
            LayerKind::AvgPool2d { .. } => match x {
                Act::F4(t) => Act::F4(self.avg_pool.as_ref().expect("avg_pool2d layer").forward(t)),
                other => panic!("avg_pool2d on {:?}", other.dims()),
            },
            LayerKind::Flatten => match x {
                Act::F2(t) => Act::F2(t),
                Act::F3(t) => Act::F2(t.flatten(1, 2)),
                Act::F4(t) => Act::F2(t.flatten(1, 3)),
                other => panic!("flatten on {:?}", other.dims()),
            },
            LayerKind::Embedding { .. } => match x {
                Act::Tokens(t) => {
                    Act::F3(self.embedding.as_ref().expect("embedding layer").forward(t))
                }
                other => panic!("embedding on {:?}", other.dims()),
            },
            LayerKind::Upsample2d { scale } => match x {
                Act::F4(t) => {
                    let s = scale as f32;
                    let options = burn::tensor::ops::InterpolateOptions::new(
                        burn::tensor::ops::InterpolateMode::Nearest,
                    )
                    .with_scale_factor([s, s]);
                    Act::F4(burn::tensor::module::interpolate(t, options))
                }
                other => panic!("upsample2d on {:?}", other.dims()),
            },
            LayerKind::Add | LayerKind::Concat { .. } => {
                panic!("merge layers run through LayerModule::merge")
            }
            LayerKind::TransformerBlock { .. } => match x {
                Act::F3(t) => Act::F3(
                    self.block
                        .as_ref()
                        .expect("transformer_block layer")
                        .forward(t),
                ),
                other => panic!("transformer_block on {:?}", other.dims()),
            },
        }
    }
}
