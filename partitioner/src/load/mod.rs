//! Reading a topology file: TOML text → `--set` overrides → key-checked sections → [`Topology`].
//! The sections are read in [`model`] (model, data, train) and [`cluster`] (hosts, links,
//! partition).

mod cluster;
mod hf;
mod model;
mod optim;
mod source;
mod tie;
mod tracking;

use crate::error::{ConfigError, line_col};
use crate::reader::Section;
use crate::topology::*;
pub use source::{keep_hosts, key_given};
use toml::{Table, Value};

const TOP_KEYS: &[&str] = &[
    "name",
    "model",
    "data",
    "eval",
    "train",
    "hosts",
    "links",
    "partition",
    "tracking",
];

/// Reads and validates the topology at `path`, applying `overrides` (`section.key=value`).
pub fn load(path: &str, overrides: &[String]) -> Result<Topology, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: path.to_string(),
        source,
    })?;
    parse(path, &text, overrides)
}

/// Validates topology `text`; `file` names it in errors and relative paths start from its
/// folder.
pub fn parse(file: &str, text: &str, overrides: &[String]) -> Result<Topology, ConfigError> {
    parse_at(file, file, text, overrides)
}

/// [`parse`] of a topology shown as `file` in errors whose relative paths (data, a Hugging
/// Face checkpoint) start from the folder of `base`, the file it came from (a plan's stored
/// topology).
pub fn parse_at(
    file: &str,
    base: &str,
    text: &str,
    overrides: &[String],
) -> Result<Topology, ConfigError> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    for o in overrides {
        apply_override(file, &mut table, o)?;
    }
    build(file, base, &table)
}

/// Applies one `section.key=value`; the value is read as TOML, or as a string if it is not.
pub fn apply_override(file: &str, table: &mut Table, spec: &str) -> Result<(), ConfigError> {
    let bad = |msg: &str| {
        ConfigError::invalid(
            file,
            format!("--set {spec}"),
            msg,
            "Write overrides as `--set section.key=value`, e.g. `--set train.schedule=1f1b`.",
        )
    };
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| bad("no `=` in the override"))?;
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key in the override"));
    }
    let value = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.trim().to_string()));
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(bad(&format!("`{p}` is not a section"))),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn build(file: &str, base: &str, table: &Table) -> Result<Topology, ConfigError> {
    let top = Section::new(file, "", table, TOP_KEYS)?;
    let name = top.opt_str("name")?.unwrap_or("unnamed").to_string();
    let empty = Table::new();
    let section = |key: &str, known: &[&str]| -> Result<Section<'_>, ConfigError> {
        let t = top.opt_table(key)?.unwrap_or(&empty);
        Section::new(file, key, t, known)
    };
    let model = model::model(&section("model", model::MODEL_KEYS)?, base)?;
    let mut data = model::data(&section("data", &model::data_keys())?, &model)?;
    data.set_base(base);
    let eval = model::eval(&section("eval", model::EVAL_KEYS)?, &data)?;
    let mut train = model::train(&section("train", model::TRAIN_KEYS)?)?;
    let hosts = cluster::hosts(&top)?;
    // Unwritten, batched weight gradients are on where they are measured faster: every device a
    // CPU (docs/decisions/0013-cpu-speed.md); ZB-H1 keeps its per-micro-batch weight pass.
    let written = top
        .opt_table("train")?
        .is_some_and(|t| t.contains_key("batch_weight_grads"));
    if !written {
        let all_cpu = hosts
            .iter()
            .flat_map(|h| &h.devices)
            .all(|d| d.kind == crate::topology::DeviceKind::Cpu);
        train.batch_weight_grads = crate::layers::WeightGrads::batch_by_default(
            train.schedule.needs().splits_weight_grads,
            all_cpu,
        );
    }
    let links = cluster::links(&top, &hosts)?;
    let partition = cluster::partition(
        &section("partition", cluster::PARTITION_KEYS)?,
        &model,
        &hosts,
        &train,
    )?;
    let tracking = tracking::tracking(&section("tracking", tracking::TRACKING_KEYS)?)?;
    let chunks = partition.chunks();
    if let Some(&c) = train.recompute_chunks.iter().find(|&&c| c >= chunks) {
        return Err(ConfigError::invalid(
            file,
            "train.recompute",
            format!(
                "names chunk {c}, but the model is cut into {chunks} chunks (0 to {})",
                chunks - 1
            ),
            "List chunk ids below the number of chunks (stages × chunks_per_rank), or write `recompute = true` for every chunk.",
        ));
    }
    Ok(Topology {
        file: file.to_string(),
        name,
        model,
        data,
        eval,
        train,
        hosts,
        links,
        partition,
        tracking,
    })
}
