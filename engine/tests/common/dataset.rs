//! Parquet files for tests, written with the parquet crate in the layouts real writers use:
//! Spark's `array<float>` (a nullable `List<Float32>` of nullable elements), pyarrow's
//! `FixedSizeList<Float32>`, one scalar column per feature, and token sequences.
#![allow(dead_code)]

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::path::Path;
use std::sync::Arc;

pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;

/// `n` samples of 64 features in [0, 1) labelled by a fixed random linear teacher (learnable).
pub fn samples(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<i64>) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let w: Vec<f32> = (0..FEATURES * CLASSES).map(|_| next() - 0.5).collect();
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let x: Vec<f32> = (0..FEATURES).map(|_| next()).collect();
        let scores: Vec<f32> = (0..CLASSES)
            .map(|c| (0..FEATURES).map(|i| x[i] * w[i * CLASSES + c]).sum())
            .collect();
        let y = (0..CLASSES)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap() as i64;
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

/// Writes `columns` to `path` in row groups of `row_group` rows (snappy, with statistics
/// unless `stats` is false).
pub fn write(path: &Path, columns: Vec<(&str, ArrayRef)>, row_group: usize, stats: bool) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group))
        .set_statistics_enabled(if stats {
            EnabledStatistics::Page
        } else {
            EnabledStatistics::None
        })
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Spark's `array<float>`: a nullable list of nullable Float32 (`None` rows and elements are
/// nulls).
pub fn spark_list(rows: &[Vec<Option<f32>>]) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Float32,
        true,
    )));
    for r in rows {
        for v in r {
            b.values().append_option(*v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

pub fn dense(xs: &[Vec<f32>]) -> Vec<Vec<Option<f32>>> {
    xs.iter()
        .map(|x| x.iter().map(|&v| Some(v)).collect())
        .collect()
}

pub fn fixed_list(xs: &[Vec<f32>]) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), FEATURES as i32);
    for x in xs {
        b.values().append_slice(x);
        b.append(true);
    }
    Arc::new(b.finish())
}

pub fn tokens(seqs: &[Vec<i64>]) -> ArrayRef {
    let mut b = ListBuilder::new(Int64Builder::new());
    for s in seqs {
        b.values().append_slice(s);
        b.append(true);
    }
    Arc::new(b.finish())
}

pub fn int32(ys: &[i64]) -> ArrayRef {
    Arc::new(Int32Array::from(
        ys.iter().map(|&y| y as i32).collect::<Vec<_>>(),
    ))
}

pub fn int64(ys: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(ys.to_vec()))
}

pub fn float32(v: Vec<f32>) -> ArrayRef {
    Arc::new(Float32Array::from(v))
}

/// A Spark-style output directory: `part-0000k.parquet` files of `rows_per_file` rows,
/// row groups of `row_group` rows, and a `_SUCCESS` marker.
pub fn spark_dir(dir: &Path, xs: &[Vec<f32>], ys: &[i64], rows_per_file: usize, row_group: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, start) in (0..xs.len()).step_by(rows_per_file).enumerate() {
        let end = (start + rows_per_file).min(xs.len());
        write(
            &dir.join(format!("part-{k:05}.parquet")),
            vec![
                ("features", spark_list(&dense(&xs[start..end]))),
                ("label", int32(&ys[start..end])),
            ],
            row_group,
            true,
        );
    }
    std::fs::write(dir.join("_SUCCESS"), "").unwrap();
}

/// The quickstart topology with `data` as its `[data]` (and `[eval]`) sections, written in
/// `dir`.
pub fn topology(dir: &Path, data: &str) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/../topologies/quickstart.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    ))
    .unwrap();
    let (head, rest) = text.split_once("[data]").unwrap();
    let (_, tail) = rest.split_once("[train]").unwrap();
    let path = dir.join("topology.toml");
    std::fs::write(&path, format!("{head}{data}\n\n[train]{tail}")).unwrap();
    path.to_string_lossy().into_owned()
}

/// topologies/transformer-lm.toml (32 tokens in) reading the `tokens` column of `data`, with
/// extra `[data]` keys, written in `dir`.
pub fn token_lm(dir: &Path, data: &Path, keys: &str) -> String {
    let base = format!(
        "{}/../topologies/transformer-lm.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let text = std::fs::read_to_string(base).unwrap().replace(
        "[data]\nsource = \"synthetic\"",
        &format!(
            "[data]\nsource = \"parquet\"\npath = \"{}\"\ntokens = \"tokens\"\n{keys}",
            data.display()
        ),
    );
    let file = dir.join("lm.toml");
    std::fs::write(&file, text).unwrap();
    file.to_string_lossy().into_owned()
}
