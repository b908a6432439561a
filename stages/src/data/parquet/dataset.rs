//! A Parquet dataset opened and checked: its files, row groups and layout, split into training
//! and validation data. Everything here reads footers (and the first row group); the checks
//! run before any stage starts, so bad data is an error naming the file and the column.

use super::columns::{BadColumn, Layout};
use super::decode;
use super::files::{self, ParquetFile};
use crate::data::Role;
use brigade_partitioner::{ConfigError, Loss, ParquetSource, Topology, Validation};
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One row group of a split.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub file: usize,
    pub index: usize,
    pub rows: usize,
}

/// Training or validation data: files and the row groups that belong to it, in file order.
#[derive(Clone)]
pub struct Split {
    pub files: Vec<ParquetFile>,
    pub groups: Vec<Group>,
}

impl Split {
    pub fn rows(&self) -> u64 {
        self.groups.iter().map(|g| g.rows as u64).sum()
    }

    /// Decodes row group `g` (an index into `groups`) for `role`.
    pub fn decode(
        &self,
        g: usize,
        layout: &Layout,
        role: Role,
    ) -> Result<Vec<decode::Row>, ConfigError> {
        let group = self.groups[g];
        let file = &self.files[group.file];
        let roots = layout
            .check_schema(file, role)
            .map_err(|b| data_error(file, Some(group.index), b))?;
        decode::row_group(file, group.index, &roots, layout, role)
            .map_err(|b| data_error(file, Some(group.index), b))
    }
}

/// What the plan records about the data (so ranks that do not read it know how many
/// validation micro-batches pass through them, and readers can tell the data changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFacts {
    pub train_rows: u64,
    pub validation_rows: u64,
}

/// A checked dataset.
#[derive(Clone)]
pub struct Dataset {
    pub layout: Arc<Layout>,
    pub train: Arc<Split>,
    pub validation: Option<Arc<Split>>,
}

impl Dataset {
    /// Opens and checks the data `topo` names.
    pub fn open(topo: &Topology, source: &ParquetSource) -> Result<Dataset, ConfigError> {
        check_model(topo)?;
        let layout = Layout::of(topo, &source.columns);
        let mut train = split(topo, source, "data.path", &source.path, &layout)?;
        let validation = match &source.validation {
            None => None,
            Some(Validation::Path(p)) => Some(split(topo, source, "data.validation", p, &layout)?),
            Some(Validation::Fraction(f)) => {
                let n = train.groups.len();
                let held = ((n as f64 * f).ceil() as usize).max(1);
                if held >= n {
                    return Err(ConfigError::invalid(
                        &topo.file,
                        "data.validation_fraction",
                        format!(
                            "{f} of {n} row group(s) leaves no training data (the split is by row group)"
                        ),
                        "Write the data in more row groups (Spark: more partitions; pyarrow: a smaller row_group_size), or give a separate `validation` path.",
                    ));
                }
                let v = Split {
                    files: train.files.clone(),
                    groups: train.groups.split_off(n - held),
                };
                Some(v)
            }
        };
        for (key, s) in [
            ("data.path", Some(&train)),
            ("data.validation", validation.as_ref()),
        ] {
            if let Some(s) = s
                && s.rows() == 0
            {
                return Err(ConfigError::invalid(
                    &s.files[0].name(),
                    key,
                    "holds no rows",
                    "Point it at a non-empty dataset.",
                ));
            }
        }
        Ok(Dataset {
            layout: Arc::new(layout),
            train: Arc::new(train),
            validation: validation.map(Arc::new),
        })
    }

    pub fn facts(&self) -> DataFacts {
        DataFacts {
            train_rows: self.train.rows(),
            validation_rows: self.validation.as_ref().map_or(0, |v| v.rows()),
        }
    }
}

/// Labels are one class per sample: the model's output must be `[classes]`.
fn check_model(topo: &Topology) -> Result<(), ConfigError> {
    let graph = topo.model.graph();
    let out = &graph.layer(graph.len() - 1).output_shape;
    let tokens = topo
        .data
        .parquet()
        .is_some_and(|p| matches!(p.columns, brigade_partitioner::Columns::Tokens { .. }));
    if !tokens && topo.model.loss == Loss::CrossEntropy && out.len() != 1 {
        return Err(ConfigError::invalid(
            &topo.file,
            "data.label",
            format!("a class label per sample needs a model output of [classes], not {out:?}"),
            "End the model with a layer giving one vector per sample (e.g. flatten, then linear).",
        ));
    }
    Ok(())
}

/// Opens every file `path` names and checks it against `layout`.
fn split(
    topo: &Topology,
    source: &ParquetSource,
    key: &str,
    path: &str,
    layout: &Layout,
) -> Result<Split, ConfigError> {
    let paths = files::list(key, &topo.file, &source.resolve(path))?;
    let mut files = Vec::with_capacity(paths.len());
    let mut groups = Vec::new();
    for p in paths {
        let file = files::open(key, p)?;
        layout
            .check_schema(&file, Role::BOTH)
            .map_err(|b| data_error(&file, None, b))?;
        check_statistics(&file, layout)?;
        for (index, rg) in file.meta.metadata().row_groups().iter().enumerate() {
            groups.push(Group {
                file: files.len(),
                index,
                rows: rg.num_rows() as usize,
            });
        }
        files.push(file);
    }
    let split = Split { files, groups };
    // Statistics say nothing of list widths (nor anything, in files written without them):
    // the first row group is decoded too. Later ones are checked as they are read.
    if let Some(first) = split.groups.iter().position(|g| g.rows > 0) {
        split.decode(first, layout, Role::BOTH)?;
    }
    Ok(split)
}

/// Nulls and out-of-range labels, from the footer's statistics where the writer kept them.
fn check_statistics(file: &ParquetFile, layout: &Layout) -> Result<(), ConfigError> {
    let meta = file.meta.metadata();
    let descr = meta.file_metadata().schema_descr();
    let schema = file.meta.schema();
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for (leaf, chunk) in rg.columns().iter().enumerate() {
            let root = descr.get_column_root_idx(leaf);
            let name = schema.field(root).name();
            let Some(field) = [Some(&layout.input), layout.label.as_ref()]
                .into_iter()
                .flatten()
                .find(|f| f.names.iter().any(|n| n == name))
            else {
                continue;
            };
            let Some(stats) = chunk.statistics() else {
                continue;
            };
            if let Some(n) = stats.null_count_opt()
                && n > 0
            {
                return Err(data_error(
                    file,
                    Some(g),
                    BadColumn::new(
                        name,
                        format!("holds {n} null values"),
                        "Drop or fill them when writing the data (in Spark: `df.na.drop()` or `na.fill`).",
                    ),
                ));
            }
            let range = match stats {
                Statistics::Int32(s) => s
                    .min_opt()
                    .zip(s.max_opt())
                    .map(|(a, b)| (*a as i64, *b as i64)),
                Statistics::Int64(s) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)),
                _ => None,
            };
            if let (Some((lo, hi)), Some(bound)) = (range, field.bound) {
                let bad = if lo < 0 { lo } else { hi };
                if lo < 0 || hi >= bound {
                    return Err(data_error(
                        file,
                        Some(g),
                        decode::range_error(name, bad, field, bound),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A column problem in `file` as a user error: the file, the column, what to do.
pub fn data_error(file: &ParquetFile, group: Option<usize>, b: BadColumn) -> ConfigError {
    let message = match group {
        Some(g) => format!("row group {g}: {}", b.message),
        None => b.message,
    };
    let key = if b.column.is_empty() {
        "data".to_string()
    } else {
        format!("column `{}`", b.column)
    };
    ConfigError::invalid(&file.name(), key, message, b.fix)
}
