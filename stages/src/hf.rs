//! A stage's initial parameters from the Hugging Face checkpoint its model was read from
//! (`[model] hf`): each of its layers' tensors, converted to f32 and to burn's layout. Names,
//! shapes and dtypes were checked when the topology was loaded; this reads the data.

use crate::params::NamedParam;
use crate::stage::Stage;
use brigade_partitioner::hf::{HfModel, HfName};
use brigade_partitioner::{ConfigError, Topology};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Replaces `stage`'s freshly initialised parameters by the checkpoint's, when its topology
/// reads one.
pub fn load_initial(stage: &mut Stage, topo: &Topology) -> Result<(), ConfigError> {
    load(stage, topo).map_err(|why| {
        ConfigError::invalid(
            &topo.file,
            "model.hf",
            why,
            "The checkpoint's files changed or are damaged since the topology was read; restore them.",
        )
    })
}

fn load(stage: &mut Stage, topo: &Topology) -> Result<(), String> {
    let Some(hf) = &topo.model.hf else {
        return Ok(());
    };
    let layers = stage.layers();
    let mut by_file: BTreeMap<&str, Vec<&HfName>> = BTreeMap::new();
    for n in hf.names.iter().filter(|n| layers.contains(&n.layer)) {
        by_file.entry(&n.file).or_default().push(n);
    }
    let mut values: BTreeMap<usize, HashMap<String, NamedParam>> = BTreeMap::new();
    for (file, names) in by_file {
        read_file(hf, file, &names, &mut values)?;
    }
    for (layer, v) in values {
        stage
            .load_layer_parameters(layer, &v)
            .map_err(|why| format!("{}: layer {layer}: {why}", hf.dir))?;
    }
    Ok(())
}

fn read_file(
    hf: &HfModel,
    file: &str,
    names: &[&HfName],
    out: &mut BTreeMap<usize, HashMap<String, NamedParam>>,
) -> Result<(), String> {
    let path = Path::new(&hf.dir).join(file);
    let shown = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{shown}: not a safetensors file: {e}"))?;
    for n in names {
        let view = st
            .tensor(&n.hf)
            .map_err(|e| format!("{shown}: {}: {e}", n.hf))?;
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            format!(
                "{shown}: {}: {:?} is not a float dtype brigade reads",
                n.hf,
                view.dtype()
            )
        })?;
        let (shape, values) = if n.transposed {
            let [o, i] = [view.shape()[0], view.shape()[1]];
            (vec![i, o], transpose(&values, o, i))
        } else {
            (view.shape().to_vec(), values)
        };
        let p = NamedParam {
            path: n.path.clone(),
            shape,
            values,
        };
        out.entry(n.layer).or_default().insert(n.path.clone(), p);
    }
    Ok(())
}

/// Little-endian F32, BF16 or F16 data as f32 (each conversion exact).
pub fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// `[rows, cols]` row-major to `[cols, rows]`.
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// A tensor under its Hugging Face name: (name, shape, values).
pub type HfTensor = (String, Vec<usize>, Vec<f32>);

/// `params` (brigade's names, `layers.<i>.<path>`, in burn's layout) as the Hugging Face
/// checkpoint's tensors: (name, shape, values), in the order of `hf.names`.
pub fn to_hf(hf: &HfModel, params: &BTreeMap<String, Vec<f32>>) -> Result<Vec<HfTensor>, String> {
    let mut seen = std::collections::HashSet::new();
    hf.names
        .iter()
        // A tied head names the embedding's tensor: written once, from the embedding.
        .filter(|n| seen.insert(n.hf.clone()))
        .map(|n| {
            let key = format!("layers.{}.{}", n.layer, n.path);
            let v = params
                .get(&key)
                .ok_or_else(|| format!("{key} (the checkpoint's {}) is missing", n.hf))?;
            let want: usize = n.hf_shape.iter().product();
            if v.len() != want {
                return Err(format!(
                    "{key} holds {} values, {} needs {want}",
                    v.len(),
                    n.hf
                ));
            }
            let values = if n.transposed {
                // burn's [in, out] back to [out, in].
                transpose(v, n.hf_shape[1], n.hf_shape[0])
            } else {
                v.clone()
            };
            Ok((n.hf.clone(), n.hf_shape.clone(), values))
        })
        .collect()
}
