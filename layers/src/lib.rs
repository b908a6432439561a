//! brigade's layer kinds. Each kind is one file in [`kinds`] holding both halves of it: its
//! definition (name, keys and their defaults, parsing and validation, output shape, cost, the
//! linear products it exposes) and, with the `burn` feature, its implementation on burn
//! (parameters, initialisation, forward). [`kinds`] lists them, one line each.
//!
//! Without `burn` the crate is pure: the partitioner plans with it and builds without burn. It
//! also holds what both halves stand on: the topology section reader and its errors, the
//! execution strategies of linear products ([`strategy`]) and, with `burn`, the activations
//! flowing between layers ([`act`]) and the deterministic initialisation ([`init`]).

pub mod def;
pub mod error;
pub mod kinds;
pub mod reader;
mod registry;
pub mod strategy;

#[cfg(feature = "burn")]
pub mod act;
#[cfg(feature = "burn")]
pub mod fused;
#[cfg(feature = "burn")]
pub mod imp;
#[cfg(feature = "burn")]
pub mod init;
#[cfg(feature = "burn")]
pub mod products;

pub use def::{ACT_BYTES, LayerCost, LayerDef, Product, TOKEN_BYTES};
pub use error::ConfigError;
#[cfg(feature = "burn")]
pub use kinds::LayerModule;
pub use kinds::{KIND_NAMES, LayerKind};
pub use strategy::WeightGrads;

impl LayerKind {
    /// See [`LayerDef::output_shape`].
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.def().output_shape(input)
    }

    /// See [`LayerDef::cost`].
    pub fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        self.def().cost(input, output)
    }

    /// See [`LayerDef::is_merge`].
    pub fn is_merge(&self) -> bool {
        self.def().is_merge()
    }

    /// See [`LayerDef::merge_shape`].
    pub fn merge_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        self.def().merge_shape(inputs)
    }

    /// See [`LayerDef::settle`].
    pub fn settle(&mut self, inputs: &[Vec<usize>]) {
        self.def_mut().settle(inputs)
    }

    /// See [`LayerDef::token_vocab`].
    pub fn token_vocab(&self) -> Option<usize> {
        self.def().token_vocab()
    }

    /// See [`LayerDef::products`].
    pub fn products(&self, input: &[usize]) -> Vec<Product> {
        self.def().products(input)
    }
}
