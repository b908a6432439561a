//! Parameter-free element-wise activations share their definition; each kind's file names its
//! FLOPs per element and its burn function (`activation!(Relu, "relu", 1.0, relu)`).

/// A parameter-free element-wise activation kind: `$ty` named `$name`, `$flops` forward FLOPs
/// per element, computed by `burn::tensor::activation::$f`.
#[macro_export]
#[doc(hidden)]
macro_rules! activation {
    ($ty:ident, $name:literal, $flops:literal, $f:ident) => {
        use $crate::def::{Kind, LayerCost, LayerDef, act_bytes, elementwise};
        use $crate::error::ConfigError;
        use $crate::reader::Section;

        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct $ty;

        impl Kind for $ty {
            const NAME: &'static str = $name;

            fn parse(_: &Section) -> Result<Self, ConfigError> {
                Ok($ty)
            }
        }

        impl LayerDef for $ty {
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
                Ok(input.to_vec())
            }

            fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
                elementwise(output, $flops, act_bytes(output))
            }
        }

        #[cfg(feature = "burn")]
        impl $crate::imp::LayerImpl for $ty {
            type Module = $crate::imp::NoParams;

            fn init(
                &self,
                _: &[usize],
                _: &mut rand_chacha::ChaCha8Rng,
                _: &burn::prelude::Device,
            ) -> $crate::imp::NoParams {
                $crate::imp::NoParams::default()
            }

            fn forward(
                &self,
                _: &$crate::imp::NoParams,
                x: $crate::act::Act,
                _: &mut $crate::imp::Forward,
            ) -> $crate::act::Act {
                $crate::map_float!(x, |t| burn::tensor::activation::$f(t))
            }
        }
    };
}
