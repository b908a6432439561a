//! Decoding one row group into rows, checking every value the statistics could not: nulls,
//! list widths, label and token ranges.

use super::columns::{BadColumn, Field, Layout, width_error};
use super::files::ParquetFile;
use crate::data::Role;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// One sample, holding what its reader's role needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Features.
    pub x: Vec<f32>,
    /// A class id (one) or a token sequence.
    pub ids: Vec<i64>,
    /// Float targets (mse).
    pub y: Vec<f32>,
}

/// Decodes row group `group` of `file`, reading only `roots` (the role's columns).
pub fn row_group(
    file: &ParquetFile,
    group: usize,
    roots: &[usize],
    layout: &Layout,
    role: Role,
) -> Result<Vec<Row>, BadColumn> {
    let io = |e: String| {
        BadColumn::new(
            "",
            format!("row group {group} cannot be read: {e}"),
            "The file is damaged: write it again.",
        )
    };
    let f = file.open().map_err(|e| io(e.to_string()))?;
    let mask = ProjectionMask::roots(
        file.meta.metadata().file_metadata().schema_descr(),
        roots.iter().copied(),
    );
    let rows = file.meta.metadata().row_group(group).num_rows() as usize;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(f, file.meta.clone())
        .with_projection(mask)
        .with_row_groups(vec![group])
        .with_batch_size(rows.max(1))
        .build()
        .map_err(|e| io(e.to_string()))?;
    let mut out: Vec<Row> = Vec::with_capacity(rows);
    for batch in reader {
        let batch = batch.map_err(|e| io(e.to_string()))?;
        let start = out.len();
        out.resize(start + batch.num_rows(), Row::default());
        let rows = &mut out[start..];
        for field in layout.fields(role) {
            let is_label = layout.label.as_ref().is_some_and(|l| l.key == field.key);
            let values = column(&batch, field)?;
            for (row, v) in rows.iter_mut().zip(values) {
                // Class ids and token sequences are integers; float labels are mse targets.
                if field.ints {
                    row.ids = v.ints;
                } else if is_label {
                    row.y = v.floats;
                } else {
                    row.x = v.floats;
                }
            }
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Values {
    floats: Vec<f32>,
    ints: Vec<i64>,
}

/// One value list per row of `batch` for `field`.
fn column(batch: &RecordBatch, field: &Field) -> Result<Vec<Values>, BadColumn> {
    let n = batch.num_rows();
    let get = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| BadColumn::new(name, "no such column", "Name a column of the file."))
    };
    let list = field.names.len() == 1
        && matches!(
            batch.column_by_name(&field.names[0]).map(|a| a.data_type()),
            Some(DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..))
        );
    match list {
        false => {
            let mut rows: Vec<Values> = (0..n).map(|_| Values::default()).collect();
            for name in &field.names {
                let a = get(name)?;
                no_nulls(name, &a)?;
                let (floats, ints) = flat(name, &a, field)?;
                for (i, row) in rows.iter_mut().enumerate() {
                    if field.ints {
                        row.ints.push(ints[i]);
                    } else {
                        row.floats.push(floats[i]);
                    }
                }
            }
            Ok(rows)
        }
        true => {
            let name = &field.names[0];
            let a = get(name)?;
            no_nulls(name, &a)?;
            let (offsets, values): (Vec<usize>, ArrayRef) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = a.as_list::<i64>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
                DataType::FixedSizeList(_, w) => {
                    let l = a.as_fixed_size_list();
                    let w = *w as usize;
                    (
                        (0..=n).map(|i| (l.offset() + i) * w).collect(),
                        l.values().clone(),
                    )
                }
                t => {
                    return Err(BadColumn::new(
                        name,
                        format!("has type {t}, not a list"),
                        "Write it as a list column.",
                    ));
                }
            };
            no_nulls(name, &values)?;
            let (floats, ints) = flat(name, &values, field)?;
            (0..n)
                .map(|i| {
                    let (a, b) = (offsets[i], offsets[i + 1]);
                    let len = b - a;
                    let want = field.len;
                    if len != want {
                        return Err(width_error(field, name, len));
                    }
                    Ok(if field.ints {
                        Values {
                            floats: Vec::new(),
                            ints: ints[a..a + want].to_vec(),
                        }
                    } else {
                        Values {
                            floats: floats[a..a + want].to_vec(),
                            ints: Vec::new(),
                        }
                    })
                })
                .collect()
        }
    }
}

fn no_nulls(name: &str, a: &ArrayRef) -> Result<(), BadColumn> {
    if a.null_count() == 0 {
        return Ok(());
    }
    let first = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
    Err(BadColumn::new(
        name,
        format!(
            "holds {} null values (the first at index {first})",
            a.null_count()
        ),
        "Drop or fill them when writing the data (in Spark: `df.na.drop()` or `na.fill`).",
    ))
}

/// The values of a flat array as f32 (floats) or i64 (ints), range-checked.
fn flat(name: &str, a: &ArrayRef, field: &Field) -> Result<(Vec<f32>, Vec<i64>), BadColumn> {
    Ok(match a.data_type() {
        DataType::Float32 if !field.ints => (
            a.as_primitive::<Float32Type>().values().to_vec(),
            Vec::new(),
        ),
        DataType::Float64 if !field.ints => (
            a.as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|&v| v as f32)
                .collect(),
            Vec::new(),
        ),
        DataType::Int32 if field.ints => {
            let v: Vec<i64> = a
                .as_primitive::<Int32Type>()
                .values()
                .iter()
                .map(|&v| v as i64)
                .collect();
            check_range(name, &v, field)?;
            (Vec::new(), v)
        }
        DataType::Int64 if field.ints => {
            let v = a.as_primitive::<Int64Type>().values().to_vec();
            check_range(name, &v, field)?;
            (Vec::new(), v)
        }
        t => {
            return Err(BadColumn::new(
                name,
                format!(
                    "holds {t} values where {} needs {}",
                    field.key,
                    if field.ints {
                        "Int32 or Int64"
                    } else {
                        "Float32 or Float64"
                    }
                ),
                "Write the column with that type, or name another column.",
            ));
        }
    })
}

/// Class ids and tokens must index the model's classes or vocabulary.
pub fn check_range(name: &str, values: &[i64], field: &Field) -> Result<(), BadColumn> {
    let Some(bound) = field.bound else {
        return Ok(());
    };
    match values.iter().find(|&&v| v < 0 || v >= bound) {
        None => Ok(()),
        Some(v) => Err(range_error(name, *v, field, bound)),
    }
}

pub fn range_error(name: &str, v: i64, field: &Field, bound: i64) -> BadColumn {
    let (what, fix) = if field.key == "data.label" {
        (
            format!("the model has {bound} classes (0 to {})", bound - 1),
            "Give the last layer as many outputs as there are classes, or re-number the labels from 0.",
        )
    } else {
        (
            format!(
                "the embedding's vocabulary holds {bound} tokens (0 to {})",
                bound - 1
            ),
            "Raise the embedding's `vocab`, or re-encode the text.",
        )
    };
    BadColumn::new(name, format!("holds {v}, but {what}"), fix)
}
