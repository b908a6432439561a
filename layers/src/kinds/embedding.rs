//! `embedding`: token ids `[tokens]` to vectors `[tokens, dim]` from a `vocab × dim` table.
//! Only the first layer may be one; the model's input and data are then token sequences.

use crate::def::{Kind, LayerCost, LayerDef, act_bytes, dim, elements};
use crate::error::ConfigError;
use crate::reader::Section;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
}

impl Kind for Embedding {
    const NAME: &'static str = "embedding";
    const KEYS: &'static [&'static str] = &["vocab", "dim"];

    fn parse(s: &Section) -> Result<Self, ConfigError> {
        Ok(Embedding {
            vocab: dim(s, "vocab", "256")?,
            dim: dim(s, "dim", "64")?,
        })
    }
}

impl LayerDef for Embedding {
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        if input.len() != 1 {
            return Err(format!(
                "embedding takes a sequence of token ids shaped [tokens], got {input:?}; \
                 it must be the first layer and model.input must be [sequence_length]"
            ));
        }
        Ok(vec![input[0], self.dim])
    }

    fn cost(&self, _: &[usize], output: &[usize]) -> LayerCost {
        LayerCost {
            params: (self.vocab * self.dim) as u64,
            forward_flops: elements(output) as f64,
            activation_bytes: act_bytes(output),
            saved_bytes: act_bytes(output),
        }
    }

    fn token_vocab(&self) -> Option<usize> {
        Some(self.vocab)
    }
}

#[cfg(feature = "burn")]
mod burn_half {
    use super::Embedding;
    use crate::act::Act;
    use crate::imp::{Forward, LayerImpl};
    use crate::init::uniform;
    use burn::module::Param;
    use burn::nn::{self, EmbeddingConfig};
    use burn::prelude::*;
    use rand_chacha::ChaCha8Rng;

    impl LayerImpl for Embedding {
        type Module = nn::Embedding;

        fn init(&self, _: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> nn::Embedding {
            let (vocab, dim) = (self.vocab, self.dim);
            let mut e = EmbeddingConfig::new(vocab, dim).init(device);
            e.weight = Param::from_tensor(uniform(rng, [vocab, dim], 1.0, device));
            e
        }

        fn forward(&self, m: &nn::Embedding, x: Act, _: &mut Forward) -> Act {
            match x {
                Act::Tokens(t) => Act::F3(m.forward(t)),
                other => panic!("embedding on {:?}", other.dims()),
            }
        }
    }
}
