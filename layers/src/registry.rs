//! The registry macro: from one line per kind it makes [`crate::LayerKind`] (the parsed layer,
//! dispatching to each kind's [`crate::def::LayerDef`]), the list of kind names and keys, the
//! parse by name and, with `burn`, [`crate::LayerModule`] (a layer's parameters: a burn module
//! enum whose variant names are the paths its parameters are saved under).

#[doc(hidden)]
#[macro_export]
macro_rules! registry {
    ($($kind:ident in $file:ident saved as $saved:ident;)*) => {
        $(pub mod $file;)*

        /// One layer of a model, as validated from `model.layers`.
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum LayerKind {
            $($kind($file::$kind),)*
        }

        /// Every kind name accepted in `kind = "..."`, for did-you-mean suggestions.
        pub const KIND_NAMES: &[&str] = &[$(<$file::$kind as $crate::def::Kind>::NAME,)*];

        impl LayerKind {
            /// The `kind = "..."` name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(LayerKind::$kind(_) => <$file::$kind as $crate::def::Kind>::NAME,)*
                }
            }

            /// The keys kind `name` accepts besides `kind`, `name` and `inputs`.
            pub fn keys(name: &str) -> Option<&'static [&'static str]> {
                $(if name == <$file::$kind as $crate::def::Kind>::NAME {
                    return Some(<$file::$kind as $crate::def::Kind>::KEYS);
                })*
                None
            }

            /// A layer of kind `name` read from `s` (`None`: no such kind).
            pub fn parse(
                name: &str,
                s: &$crate::reader::Section,
            ) -> Option<Result<LayerKind, $crate::error::ConfigError>> {
                $(if name == <$file::$kind as $crate::def::Kind>::NAME {
                    return Some(<$file::$kind as $crate::def::Kind>::parse(s).map(LayerKind::$kind));
                })*
                None
            }

            /// The kind's own answers (shapes, costs, products).
            pub fn def(&self) -> &dyn $crate::def::LayerDef {
                match self {
                    $(LayerKind::$kind(k) => k,)*
                }
            }

            pub(crate) fn def_mut(&mut self) -> &mut dyn $crate::def::LayerDef {
                match self {
                    $(LayerKind::$kind(k) => k,)*
                }
            }
        }

        /// One layer's parameters.
        #[cfg(feature = "burn")]
        #[derive(burn::module::Module, Debug)]
        #[allow(non_camel_case_types)]
        // A block's parameters are large beside a stateless kind's; layers are built once
        // and held in a Vec, and burn's Module derive does not see through a Box.
        #[allow(clippy::large_enum_variant)]
        pub enum LayerModule {
            $($saved(<$file::$kind as $crate::imp::LayerImpl>::Module),)*
        }

        #[cfg(feature = "burn")]
        impl LayerKind {
            /// The parameters of this layer at index `index` of the model, taking one sample of
            /// shape `input`: a pure function of (`seed`, `index`).
            pub fn init(
                &self,
                input: &[usize],
                seed: u64,
                index: usize,
                device: &burn::prelude::Device,
            ) -> LayerModule {
                use $crate::imp::LayerImpl;
                let mut r = $crate::init::rng($crate::init::Stream::Init, &[seed, index as u64]);
                match self {
                    $(LayerKind::$kind(k) => LayerModule::$saved(k.init(input, &mut r, device)),)*
                }
            }

            /// The layer with parameters `m` on `x`.
            pub fn forward(
                &self,
                m: &LayerModule,
                x: $crate::act::Act,
                f: &mut $crate::imp::Forward,
            ) -> $crate::act::Act {
                use $crate::imp::LayerImpl;
                match (self, m) {
                    $((LayerKind::$kind(k), LayerModule::$saved(m)) => k.forward(m, x, f),)*
                    #[allow(unreachable_patterns)]
                    _ => panic!("{} layer with another kind's parameters", self.name()),
                }
            }

            /// A merge layer on its inputs (in the order its `inputs` lists them).
            pub fn merge(&self, inputs: Vec<$crate::act::Act>) -> $crate::act::Act {
                use $crate::imp::LayerImpl;
                match self {
                    $(LayerKind::$kind(k) => k.merge(inputs),)*
                }
            }
        }

        #[cfg(feature = "burn")]
        impl LayerModule {
            /// The linear product `name` of this layer (a deferred product's W).
            pub fn linear(&self, name: &str) -> Option<&burn::nn::Linear> {
                use $crate::imp::LayerImpl;
                match self {
                    $(LayerModule::$saved(m) => <$file::$kind as LayerImpl>::linear(m, name),)*
                }
            }
        }
    };
}
