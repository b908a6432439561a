//! Reading the fixtures PyTorch wrote (tests/fixtures/ops, made by tests/fixtures/make.py) and
//! comparing brigade's numbers with them.

use safetensors::tensor::Dtype;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

/// The ops fixtures' folder.
pub fn ops_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ops")
}

/// `ops/cases.json`: what each fixture file holds.
pub fn cases() -> Value {
    let path = ops_dir().join("cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/fixtures/make.py)", path.display()));
    serde_json::from_str(&text).expect("cases.json is JSON")
}

/// One tensor of a fixture: its shape and values (f32, or integer ids).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
    /// Integer ids (`i64` holds the values) rather than floats.
    pub int: bool,
}

/// One fixture file's tensors by name.
pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    /// `ops/<file>`.
    pub fn open(file: &str) -> Fixture {
        Fixture::open_at(&ops_dir().join(file))
    }

    /// A fixture file anywhere.
    pub fn open_at(path: &std::path::Path) -> Fixture {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let (f32, i64) = match view.dtype() {
                Dtype::F32 => (
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    Vec::new(),
                ),
                Dtype::I64 => (
                    Vec::new(),
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                d => panic!("{file}: {name} is {d:?}, expected F32 or I64"),
            };
            let (shape, int) = (view.shape().to_vec(), view.dtype() == Dtype::I64);
            tensors.insert(
                name,
                Tensor {
                    shape,
                    f32,
                    i64,
                    int,
                },
            );
        }
        Fixture {
            name: file,
            tensors,
        }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The names starting with `prefix`, without it, sorted.
    pub fn suffixes(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

/// The error measure of every comparison: `max |got − want| / max(max |want|, FLOOR)`, the
/// largest difference relative to the reference tensor's own scale (an element-wise relative
/// error would blow up on the elements that cancel to near zero, which f32 cannot get right to
/// 1e-5 of themselves). FLOOR keeps an all-but-zero reference from dividing by nothing: below
/// it the comparison becomes absolute (no reference here is that small; it is a guard).
pub const FLOOR: f64 = 1e-6;

pub fn scaled_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared tensors differ in size");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let diff = got.iter().zip(want).fold(0.0f64, |m, (a, b)| {
        // A NaN anywhere is a failure, not a maximum that `max` would skip.
        if a.is_nan() || b.is_nan() {
            f64::INFINITY
        } else {
            m.max((a - b).abs() as f64)
        }
    });
    diff / scale.max(FLOOR)
}

/// Asserts `got` (shape and values) matches `want` within `tol` ([`scaled_error`]); returns
/// the error for the summary.
pub fn check(what: &str, got: (&[usize], &[f32]), want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.0, &want.shape[..], "{what}: shape");
    let e = scaled_error(got.1, &want.f32);
    println!("{what}: {e:.2e}");
    assert!(
        e <= tol,
        "{what}: brigade differs from PyTorch by {e:.3e} of the reference's scale (tolerance {tol:e})"
    );
    e
}

/// `[rows, cols]` values transposed.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
}
