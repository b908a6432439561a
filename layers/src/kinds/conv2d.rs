//! `conv2d`: a 2-d convolution of `[channels, height, width]` images (`out` channels, a square
//! `kernel`, `stride = 1`, `padding = 0`), with a bias.

use crate::def::{Kind, LayerCost, LayerDef, act_bytes, chw, count_or, dim, dim_or, elements};
use crate::def::window_out;
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conv2d {
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Kind for Conv2d {
    const NAME: &'static str = "conv2d";
    const KEYS: &'static [&'static str] = &["out", "kernel", "stride", "padding"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(Conv2d {
            out: dim(s, "out", "16")?,
            kernel: dim(s, "kernel", "3")?,
            stride: dim_or(s, "stride", 1)?,
            padding: count_or(s, "padding", 0)?,
        })
    }
}

impl LayerDef for Conv2d {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let [_, h, w] = chw(input, "conv2d")?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let oh = window_out(h + 2 * p, k, s, "conv2d")?;
        let ow = window_out(w + 2 * p, k, s, "conv2d")?;
        Ok(vec![self.out, oh, ow])
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        let c_in = input[0] as u64;
        let k2 = (self.kernel * self.kernel) as u64;
        let out = self.out as u64;
        LayerCost {
            params: out * c_in * k2 + out,
            forward_flops: 2.0 * (c_in * k2) as f64 * elements(output) as f64,
            activation_bytes: act_bytes(output),
            saved_bytes: act_bytes(output),
        }
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Conv2d;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl};
    use crate::init::uniform;
    use burn::module::Param;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{self, Conv2dConfig};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Conv2d {
        type Module = conv::Conv2d;

        fn init(&self, input: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> conv::Conv2d {
            let (c_in, out, k, p) = (input[0], self.out, self.kernel, self.padding);
            let mut conv = Conv2dConfig::new([c_in, out], [k, k])
                .with_stride([self.stride, self.stride])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init(device);
            let bound = 1.0 / ((c_in * k * k) as f32).sqrt();
            conv.weight = Param::from_tensor(uniform(rng, [out, c_in, k, k], bound, device));
            conv.bias = Some(Param::from_tensor(uniform(rng, [out], bound, device)));
            conv
        }

        fn forward(&self, m: &conv::Conv2d, x: Act, _: &mut Forward) -> Act {
            match x {
                Act::F4(t) => Act::F4(m.forward(t)),
                other => panic!("conv2d on {:?}", other.dims()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let conv = Conv2d {
            out: 8,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        assert_eq!(conv.output_shape(&[3, 32, 32]).unwrap(), vec![8, 32, 32]);
        let e = conv.output_shape(&[64]).unwrap_err();
        assert!(e.contains("[channels, height, width]"), "{e}");
    }
}
