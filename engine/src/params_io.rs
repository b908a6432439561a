//! Parameters on disk, per layer, in safetensors: tensor `layers.<i>.<path>` is layer i's
//! parameter at `path` (e.g. `layers.3.linear.weight`). Keyed by global layer index, so files
//! written by any split can be compared or merged.

use anyhow::{Context, Result};
use brigade_stages::Stage;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `stage`'s parameters to `dir/stage-<k>.safetensors`.
pub fn save(stage: &Stage, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, params) in stage.parameters() {
        for p in params {
            let bytes: Vec<u8> = p.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            named.push((format!("layers.{i}.{}", p.path), p.shape, bytes));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = named
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let path = dir.join(format!("stage-{}.safetensors", stage.index()));
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Every parameter in every `stage-*.safetensors` file of `dir`, by name (a Hugging Face
/// model's `model.safetensors` beside them holds the same values under other names).
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let stage_file = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("stage-") && n.ends_with(".safetensors"));
        if stage_file {
            let bytes = std::fs::read(&path)?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .with_context(|| format!("{}: not a safetensors file", path.display()))?;
            for (name, view) in st.tensors() {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                out.insert(name, values);
            }
        }
    }
    Ok(out)
}
