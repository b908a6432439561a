//! The metrics JSONL file: one [`StepMetrics`] object per line, written by `reference` and
//! `train` alike so their losses can be compared line by line.

pub use brigade_stages::reference::StepMetrics;
use std::fs::File;
use std::io::{BufWriter, Write};

/// Appends step metrics to a JSONL file, flushing every line so a crash loses nothing written.
pub struct MetricsWriter {
    out: BufWriter<File>,
    path: String,
}

impl MetricsWriter {
    pub fn create(path: &str) -> std::io::Result<Self> {
        Ok(MetricsWriter {
            out: BufWriter::new(File::create(path)?),
            path: path.to_string(),
        })
    }

    pub fn write(&mut self, m: &StepMetrics) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, m)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Reads a metrics file back.
pub fn read(path: &str) -> anyhow::Result<Vec<StepMetrics>> {
    use anyhow::Context;
    std::fs::read_to_string(path)
        .with_context(|| format!("{path}: cannot read the metrics file"))?
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{path}:{}: not a metrics line", i + 1))
        })
        .collect()
}
