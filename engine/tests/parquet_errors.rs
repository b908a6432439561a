//! Bad data is refused before any stage starts: exit 2, and a message naming the file, the
//! column and what to do.

mod common;
#[path = "common/dataset.rs"]
mod dataset;

use common::{run, stderr, tmp};
use dataset::*;
use std::path::Path;

/// A topology reading `path` (features "features", label "label", extra `keys`).
fn topo(dir: &Path, path: &Path, keys: &str) -> String {
    topology(
        dir,
        &format!(
            "[data]\nsource = \"parquet\"\npath = \"{}\"\nfeatures = \"features\"\nlabel = \"label\"\n{keys}",
            path.display()
        ),
    )
}

fn good(path: &Path, n: usize) {
    let (xs, ys) = samples(n, 9);
    write(
        path,
        vec![("features", spark_list(&dense(&xs))), ("label", int32(&ys))],
        64,
        true,
    );
}

/// `brigade plan` and `brigade train` refuse `file` with exit 2 and a message holding `want`.
fn refused(file: &str, want: &[&str]) {
    for cmd in ["plan", "train"] {
        let out = run(&[cmd, file]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        for w in want {
            assert!(err.contains(w), "{cmd}: no {w:?} in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        // Before any stage starts: no stage said a word.
        assert!(!err.contains("[stage"), "{cmd}: {err}");
    }
}

#[test]
fn bad_data_is_refused_before_any_stage_starts() {
    let dir = tmp("parquet-errors");
    let (xs, ys) = samples(100, 4);
    let path = |n: &str| dir.join(n);

    // A missing path.
    refused(
        &topo(&dir, &path("nowhere.parquet"), ""),
        &["nowhere.parquet", "data.path", "does not exist"],
    );

    // Not Parquet at all, and a Parquet file cut short (its footer gone).
    std::fs::write(path("text.parquet"), "label,features\n1,0.5\n").unwrap();
    refused(
        &topo(&dir, &path("text.parquet"), ""),
        &["text.parquet", "not a readable Parquet file"],
    );
    good(&path("whole.parquet"), 100);
    let bytes = std::fs::read(path("whole.parquet")).unwrap();
    std::fs::write(path("cut.parquet"), &bytes[..bytes.len() - 20]).unwrap();
    refused(
        &topo(&dir, &path("cut.parquet"), ""),
        &["cut.parquet", "not a readable Parquet file"],
    );

    // A missing column (with the file's columns and a suggestion).
    write(
        &path("renamed.parquet"),
        vec![("feature", spark_list(&dense(&xs))), ("label", int32(&ys))],
        64,
        true,
    );
    refused(
        &topo(&dir, &path("renamed.parquet"), ""),
        &[
            "renamed.parquet",
            "column `features`",
            "no such column",
            "Did you mean `feature`?",
        ],
    );

    // A column of the wrong type: float labels for cross-entropy.
    write(
        &path("float-labels.parquet"),
        vec![
            ("features", spark_list(&dense(&xs))),
            ("label", float32(ys.iter().map(|&y| y as f32).collect())),
        ],
        64,
        true,
    );
    refused(
        &topo(&dir, &path("float-labels.parquet"), ""),
        &[
            "float-labels.parquet",
            "column `label`",
            "has type Float32",
            "Int32 or Int64",
        ],
    );

    // Nulls in features (a null element) and in labels, with and without statistics.
    let mut holey = dense(&xs);
    holey[3][7] = None;
    for stats in [true, false] {
        let p = path(&format!("null-features-{stats}.parquet"));
        write(
            &p,
            vec![("features", spark_list(&holey)), ("label", int32(&ys))],
            64,
            stats,
        );
        refused(
            &topo(&dir, &p, ""),
            &["null-features", "column `features`", "null"],
        );
    }
    let labels: arrow_array::ArrayRef = std::sync::Arc::new(arrow_array::Int32Array::from(
        ys.iter()
            .enumerate()
            .map(|(i, &y)| (i != 5).then_some(y as i32))
            .collect::<Vec<_>>(),
    ));
    write(
        &path("null-labels.parquet"),
        vec![("features", spark_list(&dense(&xs))), ("label", labels)],
        64,
        true,
    );
    refused(
        &topo(&dir, &path("null-labels.parquet"), ""),
        &["null-labels.parquet", "column `label`", "null"],
    );

    // Rows narrower than model.input.
    let narrow: Vec<Vec<f32>> = xs.iter().map(|x| x[..32].to_vec()).collect();
    write(
        &path("narrow.parquet"),
        vec![
            ("features", spark_list(&dense(&narrow))),
            ("label", int32(&ys)),
        ],
        64,
        true,
    );
    refused(
        &topo(&dir, &path("narrow.parquet"), ""),
        &[
            "narrow.parquet",
            "column `features`",
            "rows hold 32 values",
            "needs 64",
        ],
    );

    // A label outside the model's 10 classes.
    let mut wide = ys.clone();
    wide[9] = 12;
    write(
        &path("class-12.parquet"),
        vec![
            ("features", spark_list(&dense(&xs))),
            ("label", int32(&wide)),
        ],
        64,
        true,
    );
    refused(
        &topo(&dir, &path("class-12.parquet"), ""),
        &[
            "class-12.parquet",
            "column `label`",
            "holds 12",
            "10 classes",
        ],
    );

    // An empty dataset (a file with the right columns and no rows), and an empty directory.
    good(&path("empty.parquet"), 0);
    refused(
        &topo(&dir, &path("empty.parquet"), ""),
        &["empty.parquet", "holds no rows"],
    );
    std::fs::create_dir_all(path("empty-dir")).unwrap();
    std::fs::write(path("empty-dir").join("_SUCCESS"), "").unwrap();
    refused(
        &topo(&dir, &path("empty-dir"), ""),
        &["empty-dir", "names no files"],
    );

    // A validation set with the same problems is refused the same way.
    refused(
        &topo(
            &dir,
            &path("whole.parquet"),
            &format!("validation = \"{}\"", path("class-12.parquet").display()),
        ),
        &["class-12.parquet", "holds 12"],
    );
}

#[test]
fn data_keys_are_checked_with_the_topology() {
    let dir = tmp("parquet-keys");
    good(&dir.join("d.parquet"), 64);
    let cases = [
        (
            "path = \"x\"\n",
            "synthetic",
            "data.path: is only read when source = \"parquet\"",
        ),
        ("", "parquet-no-path", "data.path: missing"),
        (
            "tokens = \"t\"\n",
            "parquet",
            "data.tokens: is for models that start with an embedding",
        ),
        (
            "validation_fraction = 1.5\n",
            "parquet",
            "data.validation_fraction: 1.5 is not between 0 and 1",
        ),
    ];
    for (extra, kind, want) in cases {
        let data = match kind {
            "synthetic" => format!("[data]\nsource = \"synthetic\"\n{extra}"),
            "parquet-no-path" => {
                "[data]\nsource = \"parquet\"\nfeatures = \"f\"\nlabel = \"l\"\n".to_string()
            }
            _ => format!(
                "[data]\nsource = \"parquet\"\npath = \"d.parquet\"\nfeatures = \"features\"\nlabel = \"label\"\n{extra}"
            ),
        };
        let file = topology(&dir, &data);
        let out = run(&["plan", &file]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "no {want:?} in {}",
            stderr(&out)
        );
    }
    // [eval] needs validation data.
    let file = topology(
        &dir,
        "[data]\nsource = \"parquet\"\npath = \"d.parquet\"\nfeatures = \"features\"\nlabel = \"label\"\n\n[eval]\nevery = 5\n",
    );
    let out = run(&["plan", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("eval.every: there is no validation data"),
        "{}",
        stderr(&out)
    );
}

/// transformer-lm (32 tokens in) reading `rows` from a file in `dir`, 32 rows a row group.
fn token_model(dir: &Path, rows: &[Vec<i64>]) -> String {
    let data = dir.join("text.parquet");
    write(&data, vec![("tokens", tokens(rows))], 32, true);
    token_lm(dir, &data, "shuffle = false")
}

/// Token rows hold exactly the model's inputs and one more token: a longer or shorter row is
/// refused with its row group, before training when it is in the first one, else when read.
#[test]
fn token_rows_of_another_length_are_refused_by_row_group() {
    let dir = tmp("parquet-token-rows");
    let rows = |n: usize, len: usize| -> Vec<Vec<i64>> {
        (0..n)
            .map(|i| (0..len).map(|t| ((i + t) % 64) as i64).collect())
            .collect()
    };
    let file = token_model(&dir, &rows(64, 40));
    refused(
        &file,
        &[
            "text.parquet",
            "row group 0",
            "column `tokens`",
            "a row holds 40 tokens",
            "rows need exactly 33",
        ],
    );
    // The first row group is right; a row of the second is one token short.
    let mut two = rows(64, 33);
    two[40].pop();
    let file = token_model(&dir, &two);
    let out = run(&["train", &file, "--steps", "3", "--set", "train.batch=32"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in ["text.parquet", "row group 1", "a row holds 32 tokens"] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
