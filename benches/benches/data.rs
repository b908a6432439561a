//! Parquet reading: brigade's reader against a single-threaded pyarrow scan of the same file,
//! and the peak RSS of training on a dataset 10× larger than another (it must not grow).
//! `cargo bench -p brigade-benches --bench data`
//!
//! The files: 784 random Float32 features as Spark's nullable `List<Float32>` and an Int32
//! label, snappy, row groups of 8,192 rows — MNIST-shaped rows, incompressible values. pyarrow
//! runs from `$BRIGADE_BENCH_PYTHON`, else `python3`; without pyarrow its column says so.

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use brigade_stages::data::parquet::ParquetData;
use brigade_stages::{Batches, Role};
use burn::prelude::Device;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

const WIDTH: usize = 784;
const ROW_GROUP: usize = 2048;

fn write(path: &Path, rows: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "features",
            DataType::List(Arc::new(Field::new("element", DataType::Float32, true))),
            true,
        ),
        Field::new("label", DataType::Int32, true),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for start in (0..rows).step_by(ROW_GROUP) {
        let n = ROW_GROUP.min(rows - start);
        let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
            "element",
            DataType::Float32,
            true,
        )));
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            for _ in 0..WIDTH {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                b.values()
                    .append_value((s >> 40) as f32 / (1u64 << 24) as f32);
            }
            b.append(true);
            labels.push((s % 10) as i32);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(b.finish()), Arc::new(Int32Array::from(labels))];
        w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

/// A topology reading `data`: a small MLP, so training time is mostly reading.
fn topology(dir: &Path, name: &str, data: &Path, batch: usize) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
[model]
input = [{WIDTH}]
layers = [{{ kind = "linear", out = 32 }}, {{ kind = "relu" }}, {{ kind = "linear", out = 10 }}]
[data]
source = "parquet"
path = "{}"
features = "features"
label = "label"
shuffle_buffer = 4096
[train]
batch = {batch}
microbatches = 4
optimizer = "sgd"
lr = 0.01
[[hosts]]
name = "local"
devices = ["cpu"]
[partition]
stages = 1
"#,
            data.display()
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// brigade's reader: one epoch of training inputs (features only, file order), in rows/s.
fn brigade_scan(file: &str, rows: usize) -> f64 {
    let topo = brigade_partitioner::load(file, &["data.shuffle_buffer=0".into()]).unwrap();
    let batch = topo.train.batch;
    let mut data = ParquetData::open(
        &topo,
        Role {
            inputs: true,
            targets: false,
            ..Role::default()
        },
        0,
    )
    .unwrap();
    let device = Device::flex();
    let start = Instant::now();
    for step in 0..(rows / batch) as u64 {
        for mb in 0..topo.train.microbatches as u64 {
            std::hint::black_box(data.inputs(step, mb, &device).unwrap());
        }
    }
    (rows / batch * batch) as f64 / start.elapsed().as_secs_f64()
}

/// pyarrow, one thread, the features column to NumPy-ready buffers: rows/s, or why not.
fn pyarrow_scan(path: &Path) -> Result<f64, String> {
    let python = std::env::var("BRIGADE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, time
import pyarrow.parquet as pq
t = time.perf_counter()
table = pq.read_table(sys.argv[1], columns=["features"], use_threads=False)
values = table.column("features").combine_chunks().flatten().to_numpy()
print(table.num_rows / (time.perf_counter() - t))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pyarrow not installed for {python} (set BRIGADE_BENCH_PYTHON to a Python with pyarrow)"
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("pyarrow printed no rate: {e}"))
}

/// Peak RSS (MiB) of `brigade reference FILE --steps STEPS`, run by this executable.
// The child is reaped by wait4 (for its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn training_rss(file: &str, steps: usize) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["reference", file, "--steps", &steps.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0 && status == 0, "reference on {file} failed");
    usage.ru_maxrss as f64 / 1024.0
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("reference") {
        return brigade_engine::cli::main();
    }
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let dir = std::env::temp_dir().join(format!("brigade-bench-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (small, large) = (dir.join("small.parquet"), dir.join("large.parquet"));
    let (n_small, n_large) = (6_000, 60_000);
    write(&small, n_small);
    write(&large, n_large);
    let mib = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "data benchmark: {WIDTH} Float32 features (Spark's List<Float32>) + Int32 label, snappy, row groups of {ROW_GROUP}; {} rows = {:.0} MiB",
        n_large,
        mib(&large)
    );
    let file = topology(&dir, "large", &large, 512);
    let gb = |rows: f64| rows * (WIDTH * 4) as f64 / 1e9;
    println!("| reader | rows/s | GB/s of features |");
    println!("|---|---|---|");
    for round in 0..3 {
        let ours = brigade_scan(&file, n_large);
        println!(
            "| brigade (reader thread → [512, 784] tensors), run {} | {ours:.0} | {:.2} |",
            round + 1,
            gb(ours)
        );
        match pyarrow_scan(&large) {
            Ok(r) => println!(
                "| pyarrow read_table(use_threads=False), run {} | {r:.0} | {:.2} |",
                round + 1,
                gb(r)
            ),
            Err(why) => println!("| pyarrow | — ({why}) | — |"),
        }
    }
    // Training reads every row of both files at least once (steps × batch ≥ rows of the large).
    let batch = 1024;
    let steps = n_large.div_ceil(batch);
    println!(
        "\npeak RSS of `brigade reference` for {steps} steps of {batch} (shuffle_buffer 4096, prefetch 2):"
    );
    println!("| dataset | file MiB | peak RSS MiB |");
    println!("|---|---|---|");
    for (name, path, rows) in [("small", &small, n_small), ("large", &large, n_large)] {
        let file = topology(&dir, name, path, batch);
        println!(
            "| {rows} rows | {:.0} | {:.0} |",
            mib(path),
            training_rss(&file, steps)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
