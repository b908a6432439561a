//! Pooling kinds share their definition: a square `kernel` (default 2) moved by `stride`
//! (default: the kernel) over `[channels, height, width]`.

/// A pooling kind: `$ty` named `$name`, run by burn's `$module` built from `$config`.
#[macro_export]
#[doc(hidden)]
macro_rules! pool {
    ($ty:ident, $name:literal, $module:ident, $config:ident) => {
        use $crate::def::{Kind, LayerCost, LayerDef, act_bytes, chw, dim_or, elementwise};
        use $crate::error::ConfigError;
        use $crate::reader::Section;

        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct $ty {
            pub kernel: usize,
            pub stride: usize,
        }

        impl Kind for $ty {
            const NAME: &'static str = $name;
            const KEYS: &'static [&'static str] = &["kernel", "stride"];

            fn parse(s: &Section) -> Result<Self, ConfigError> {
                let kernel = dim_or(s, "kernel", 2)?;
                let stride = dim_or(s, "stride", kernel as u64)?;
                Ok($ty { kernel, stride })
            }
        }

        impl LayerDef for $ty {
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
                use $crate::def::window_out;
                let [c, h, w] = chw(input, $name)?;
                let oh = window_out(h, self.kernel, self.stride, $name)?;
                let ow = window_out(w, self.kernel, self.stride, $name)?;
                Ok(vec![c, oh, ow])
            }

            fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
                elementwise(
                    output,
                    (self.kernel * self.kernel) as f64,
                    act_bytes(output),
                )
            }
        }

        #[cfg(feature = "burn")]
        impl $crate::imp::LayerImpl for $ty {
            type Module = burn::nn::pool::$module;

            fn init(
                &self,
                _: &[usize],
                _: &mut rand_chacha::ChaCha8Rng,
                _: &burn::prelude::Device,
            ) -> burn::nn::pool::$module {
                burn::nn::pool::$config::new([self.kernel, self.kernel])
                    .with_strides([self.stride, self.stride])
                    .init()
            }

            fn forward(
                &self,
                m: &burn::nn::pool::$module,
                x: $crate::act::Act,
                _: &mut $crate::imp::Forward,
            ) -> $crate::act::Act {
                match x {
                    $crate::act::Act::F4(t) => $crate::act::Act::F4(m.forward(t)),
                    other => panic!("{} on {:?}", $name, other.dims()),
                }
            }
        }
    };
}
