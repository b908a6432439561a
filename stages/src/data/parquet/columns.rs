//! Which columns a sample is made of and how they are laid out, checked against every file's
//! schema and the model before anything trains.

use super::files::ParquetFile;
use crate::data::Role;
use arrow_schema::{DataType, Schema};
use brigade_partitioner::{Columns, Loss, Topology};

/// A logical column: the Parquet columns it reads and what it must hold.
#[derive(Debug, Clone)]
pub struct Field {
    /// The topology key that names it (for messages).
    pub key: &'static str,
    /// One list column, or one scalar column per element.
    pub names: Vec<String>,
    /// Integers (class ids, tokens) rather than floats.
    pub ints: bool,
    /// Values per row (token rows: the model's inputs and one more).
    pub len: usize,
    /// Integer values must be below this.
    pub bound: Option<i64>,
}

/// What a sample is made of, checked against the model.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Features (float) or tokens (int) — what the first chunk's inputs come from.
    pub input: Field,
    /// Labels; `None` for token models (the tokens shifted by one are the targets).
    pub label: Option<Field>,
    /// For token models: inputs are the first `seq` tokens of a row.
    pub seq: Option<usize>,
}

/// A column problem found while checking or reading; becomes an error naming the file.
#[derive(Debug, Clone)]
pub struct BadColumn {
    pub column: String,
    pub message: String,
    pub fix: String,
}

impl BadColumn {
    pub fn new(column: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        BadColumn {
            column: column.to_string(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl Layout {
    /// The layout `topo`'s `[data]` keys and model ask for.
    pub fn of(topo: &Topology, columns: &Columns) -> Layout {
        let graph = topo.model.graph();
        let output = graph.layer(graph.len() - 1).output_shape.clone();
        let n_out: usize = output.iter().product();
        let classes = *output.last().expect("a layer has an output shape") as i64;
        match columns {
            Columns::Features { features, label } => Layout {
                input: Field {
                    key: "data.features",
                    names: features.clone(),
                    ints: false,
                    len: topo.model.input.iter().product(),
                    bound: None,
                },
                label: Some(match topo.model.loss {
                    Loss::CrossEntropy => Field {
                        key: "data.label",
                        names: label.clone(),
                        ints: true,
                        len: 1,
                        bound: Some(classes),
                    },
                    Loss::Mse => Field {
                        key: "data.label",
                        names: label.clone(),
                        ints: false,
                        len: n_out,
                        bound: None,
                    },
                }),
                seq: None,
            },
            Columns::Tokens { tokens } => {
                let vocab = topo.model.token_vocab().map_or(i64::MAX, |v| v as i64);
                let t = topo.model.input[0];
                Layout {
                    input: Field {
                        key: "data.tokens",
                        names: vec![tokens.clone()],
                        ints: true,
                        len: t + 1,
                        // Tokens are inputs (below the vocabulary) and targets (below the
                        // output's classes).
                        bound: Some(vocab.min(classes)),
                    },
                    label: None,
                    seq: Some(t),
                }
            }
        }
    }

    /// The fields a rank in `role` reads.
    pub fn fields(&self, role: Role) -> Vec<&Field> {
        let mut v = Vec::new();
        if role.inputs || (role.targets && self.label.is_none()) {
            v.push(&self.input);
        }
        if role.targets
            && let Some(l) = &self.label
        {
            v.push(l);
        }
        v
    }

    /// Checks `file`'s schema holds every field with a usable type; returns the root column
    /// indices to project for `role`.
    pub fn check_schema(&self, file: &ParquetFile, role: Role) -> Result<Vec<usize>, BadColumn> {
        let schema = file.meta.schema();
        let mut roots = Vec::new();
        for f in [Some(&self.input), self.label.as_ref()]
            .into_iter()
            .flatten()
        {
            if f.names.len() > 1 && f.names.len() != f.len {
                return Err(BadColumn::new(
                    &f.names[0],
                    format!(
                        "{} names {} columns, but the model needs {} values per row",
                        f.key,
                        f.names.len(),
                        f.len
                    ),
                    "Name one column per element, or one list column.",
                ));
            }
            for name in &f.names {
                let idx = find(schema, name, f.key)?;
                check_type(f, name, schema.field(idx).data_type())?;
                if self.fields(role).iter().any(|g| g.key == f.key) {
                    roots.push(idx);
                }
            }
        }
        if let Some(t) = self.seq
            && let Some(DataType::FixedSizeList(_, n)) = schema
                .field_with_name(&self.input.names[0])
                .ok()
                .map(|f| f.data_type())
            && *n as usize != t + 1
        {
            return Err(BadColumn::new(
                &self.input.names[0],
                format!(
                    "holds sequences of {n} tokens; the model reads {t} inputs and their {t} next tokens, so rows need {} tokens",
                    t + 1
                ),
                "Write rows of exactly that many tokens (inputs and their next tokens), or set model.input (model.seq) to one less than their length.",
            ));
        }
        roots.sort_unstable();
        roots.dedup();
        Ok(roots)
    }
}

fn find(schema: &Schema, name: &str, key: &str) -> Result<usize, BadColumn> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        BadColumn::new(
            name,
            "no such column",
            format!(
                "The file has: {}. Set {key} to one of them.{}",
                names.join(", "),
                brigade_partitioner::error::did_you_mean(name, &names)
            ),
        )
    })
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

fn is_int(t: &DataType) -> bool {
    matches!(t, DataType::Int32 | DataType::Int64)
}

fn check_type(f: &Field, name: &str, t: &DataType) -> Result<(), BadColumn> {
    let elem_ok = |e: &DataType| if f.ints { is_int(e) } else { is_float(e) };
    let what = if f.ints {
        "Int32 or Int64"
    } else {
        "Float32 or Float64"
    };
    let ok = match (t, f.len) {
        (DataType::List(e) | DataType::LargeList(e), _) => elem_ok(e.data_type()),
        (DataType::FixedSizeList(e, n), len) => {
            // Features must match the model's width exactly (tokens: checked with the
            // sequence length in `check_schema`).
            if elem_ok(e.data_type()) && !f.ints && *n as usize != len && f.names.len() == 1 {
                return Err(width_error(f, name, *n as usize));
            }
            elem_ok(e.data_type())
        }
        (scalar, 1) => elem_ok(scalar),
        (scalar, _) => f.names.len() > 1 && elem_ok(scalar),
    };
    if ok {
        return Ok(());
    }
    let want = match (f.names.len(), f.len, f.key) {
        (_, _, "data.tokens") => format!("a list of {what}"),
        (1, 1, _) => format!("an {what} column"),
        (1, _, _) => format!("a list of {what} (or one {what} column per element)"),
        _ => format!("an {what} column (one per element)"),
    };
    Err(BadColumn::new(
        name,
        format!("has type {t}, but {} needs {want}", f.key),
        "Write the column with that type (in Spark: cast it, e.g. `col.cast(\"array<float>\")`), or name another column.",
    ))
}

/// A list column whose rows hold `got` values where the model needs `f.len`.
pub fn width_error(f: &Field, name: &str, got: usize) -> BadColumn {
    if f.key == "data.tokens" {
        let t = f.len - 1;
        return BadColumn::new(
            name,
            format!(
                "a row holds {got} tokens, but the model reads {t} inputs and their {t} next tokens, so rows need exactly {} (data.tokens)",
                f.len
            ),
            format!(
                "Write rows of {} tokens, or set model.input (model.seq for a Hugging Face model) to one less than the rows' length.",
                f.len
            ),
        );
    }
    let what = if f.key == "data.label" {
        "the model's output size"
    } else {
        "model.input (its product)"
    };
    BadColumn::new(
        name,
        format!(
            "rows hold {got} values, but {what} needs {} for {}",
            f.len, f.key
        ),
        "Make model.input (or the last layer) match the data, or write the data with that width.",
    )
}
