//! `brigade export FILE (--params DIR | --checkpoint CK) --out OUT`: a model read from a Hugging
//! Face checkpoint (`[model] hf`), trained by brigade, written back as one: OUT/config.json and
//! OUT/model.safetensors under the Hugging Face names, for
//! `transformers.LlamaForCausalLM.from_pretrained(OUT)`.

use super::args::TopologyArgs;
use anyhow::{Context, Result, bail};
use brigade_partitioner::ConfigError;
use clap::Args;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Parameters written by `--save-params DIR` (train or reference).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    pub params: Option<String>,
    /// A checkpoint directory (its newest complete step) or one step's directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<String>,
    /// The Hugging Face directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: String,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let topo = args.topology.load()?;
    let Some(hf) = &topo.model.hf else {
        return Err(ConfigError::invalid(
            &topo.file,
            "model.hf",
            "is not set: only a model read from a Hugging Face checkpoint has Hugging Face names",
            "Export a model whose topology reads `[model] hf = \"DIR\"`.",
        )
        .into());
    };
    let params = match (&args.params, &args.checkpoint) {
        (Some(dir), _) => crate::params_io::load_dir(Path::new(dir))?,
        (None, Some(ck)) => checkpoint_params(Path::new(ck), topo.model.layers.len())?,
        (None, None) => bail!("pass --params DIR or --checkpoint DIR"),
    };
    write_hf(hf, &params, Path::new(&args.out))
}

/// After `train` or `reference` with `--save-params DIR` on a Hugging Face model: DIR gets
/// config.json and model.safetensors too, so `from_pretrained(DIR)` loads what was trained.
pub fn write_beside_params(topo: &brigade_partitioner::Topology, dir: &Path) -> Result<()> {
    match &topo.model.hf {
        Some(hf) => write_hf(hf, &crate::params_io::load_dir(dir)?, dir),
        None => Ok(()),
    }
}

/// OUT/model.safetensors (f32, Hugging Face names) and OUT/config.json.
fn write_hf(
    hf: &brigade_partitioner::hf::HfModel,
    params: &BTreeMap<String, Vec<f32>>,
    out: &Path,
) -> Result<()> {
    let tensors = brigade_stages::hf::to_hf(hf, params).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_tensors(&out.join("model.safetensors"), &tensors)?;
    let mut config = hf.config_json.clone();
    // The weights are written in f32 whatever the checkpoint read held.
    for key in ["torch_dtype", "dtype"] {
        if config.get(key).is_some() {
            config[key] = "float32".into();
        }
    }
    let path = out.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {} tensors to {}", tensors.len(), out.display());
    Ok(())
}

/// A checkpoint's parameters under brigade's names (`layers.<i>.<path>`).
fn checkpoint_params(root: &Path, layers: usize) -> Result<BTreeMap<String, Vec<f32>>> {
    let dir = match brigade_stages::checkpoint::latest(root, layers) {
        Some((_, dir)) => dir,
        None if root.is_dir() => root.to_path_buf(),
        None => bail!("{}: no checkpoint there", root.display()),
    };
    let mut out = BTreeMap::new();
    for i in 0..layers {
        let path = dir.join(format!("layer-{i}.safetensors"));
        if !path.exists() {
            continue; // a parameter-free layer's file holds nothing to export
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not a safetensors file", path.display()))?;
        for (name, view) in st.tensors() {
            let values = brigade_stages::hf::to_f32(view.dtype(), view.data())
                .with_context(|| format!("{}: {name} is not f32", path.display()))?;
            out.insert(format!("layers.{i}.{name}"), values);
        }
    }
    Ok(out)
}

fn write_tensors(path: &Path, tensors: &[brigade_stages::hf::HfTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| Ok((n.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), path)
        .with_context(|| format!("cannot write {}", path.display()))
}
