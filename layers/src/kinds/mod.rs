//! Every layer kind a topology may name: one file each, one line each here.
//!
//! A line reads `Type in file saved as path;`: the kind's type (its `kind = "..."` name is the
//! type in snake case), its file in this folder, and the path its parameters are saved under in
//! checkpoints and parameter files (`layers.3.linear.weight`; a parameter-free kind's path is
//! never written).

mod activation;
mod pool;

crate::registry! {
    Linear in linear saved as linear;
    Relu in relu saved as relu;
    Gelu in gelu saved as gelu;
    Tanh in tanh saved as tanh;
    Sigmoid in sigmoid saved as sigmoid;
    LayerNorm in layer_norm saved as norm;
    Dropout in dropout saved as dropout;
    Conv2d in conv2d saved as conv;
    MaxPool2d in max_pool2d saved as max_pool;
    AvgPool2d in avg_pool2d saved as avg_pool;
    Flatten in flatten saved as flatten;
    Embedding in embedding saved as embedding;
    TransformerBlock in transformer_block saved as block;
    RmsNorm in rms_norm saved as rms_norm;
    LlamaBlock in llama_block saved as llama;
    Upsample2d in upsample2d saved as upsample;
    Add in add saved as add;
    Concat in concat saved as concat;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Section;
    use toml::Value;

    /// Every registered kind parses from its keys and serialises under the name it was parsed by
    /// (the plan's `kind`, which is the type in snake case).
    #[test]
    fn every_kind_parses_and_serialises_under_its_name() {
        for name in KIND_NAMES {
            let keys = LayerKind::keys(name).expect("a listed kind has keys");
            let table: toml::Table = keys
                .iter()
                .map(|&k| {
                    let v = match k {
                        "p" => Value::Float(0.5),
                        "eps" => Value::Float(1e-5),
                        "bias" => Value::Boolean(true),
                        "rope_theta" => Value::Float(1e4),
                        "rope_scaling" => toml::toml! {
                            rope_type = "llama3"
                            factor = 8.0
                            low_freq_factor = 1.0
                            high_freq_factor = 4.0
                            original_max_position_embeddings = 64
                        }
                        .into(),
                        _ => Value::Integer(2),
                    };
                    (k.to_string(), v)
                })
                .collect();
            let s = Section::new("t.toml", "model.layers[0]", &table, keys).unwrap();
            let kind = LayerKind::parse(name, &s).unwrap().unwrap();
            assert_eq!(kind.name(), *name);
            let written = Value::try_from(&kind).unwrap();
            assert_eq!(written["kind"].as_str(), Some(*name));
        }
        assert!(LayerKind::keys("lstm").is_none());
    }
}
