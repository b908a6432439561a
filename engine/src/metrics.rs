//! The metrics JSONL file: one [`StepMetrics`] object per line, written by `reference` and
//! `train` alike so their losses can be compared line by line, and — with `[eval]` — one
//! [`EvalMetrics`] line (`{"step", "val_loss", "val_accuracy"}`) after each evaluation, and
//! under `train --max-restarts` a `{"step", "restart", "cause"}` line after each restart.

pub use crate::reference::EvalMetrics;
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

    /// Continues an existing file (after a restart).
    pub fn append(path: &str) -> std::io::Result<Self> {
        Ok(MetricsWriter {
            out: BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            path: path.to_string(),
        })
    }

    pub fn write(&mut self, m: &StepMetrics) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, m)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn write_eval(&mut self, m: &EvalMetrics) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, m)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Reads a metrics file's step lines back.
pub fn read(path: &str) -> anyhow::Result<Vec<StepMetrics>> {
    read_lines(path, false)
}

/// Reads a metrics file's evaluation lines back.
pub fn read_eval(path: &str) -> anyhow::Result<Vec<EvalMetrics>> {
    read_lines(path, true)
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &str, eval: bool) -> anyhow::Result<Vec<T>> {
    use anyhow::Context;
    std::fs::read_to_string(path)
        .with_context(|| format!("{path}: cannot read the metrics file"))?
        .lines()
        .enumerate()
        // Step lines carry "loss", evaluation lines "val_loss", restart lines neither.
        .filter(|(_, l)| {
            if eval {
                l.contains("\"val_loss\"")
            } else {
                l.contains("\"loss\"")
            }
        })
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{path}:{}: not a metrics line", i + 1))
        })
        .collect()
}

/// "val_loss 0.1234  val_accuracy 97.21 %" for people.
pub fn describe_eval(m: &EvalMetrics) -> String {
    match m.val_accuracy {
        Some(a) => format!(
            "val_loss {:.4}  val_accuracy {:.2} %",
            m.val_loss,
            a * 100.0
        ),
        None => format!("val_loss {:.4}", m.val_loss),
    }
}

/// Prints the run's last evaluation, if it had one (what `train`, `launch` and agents print last).
pub fn print_last_eval(e: Option<&EvalMetrics>) {
    if let Some(e) = e {
        println!("validation after step {}: {}", e.step, describe_eval(e));
    }
}
