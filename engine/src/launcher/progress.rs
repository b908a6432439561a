//! What the user sees and keeps of a launch: the progress bar, and the metrics file written
//! from the rank holding the last chunk (the one that knows the loss).

use super::spec::{LaunchReport, LaunchSpec};
use crate::metrics::{EvalMetrics, MetricsWriter, StepMetrics};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// The progress bar, the metrics file, and the figures for the report.
pub struct Progress {
    bar: ProgressBar,
    metrics: Option<MetricsWriter>,
    /// The rank holding the last chunk.
    last_stage: usize,
    /// This launch runs that rank.
    shows_loss: bool,
    batch: usize,
    /// For each step's learning rate.
    train: brigade_partitioner::Train,
    /// The MLflow run the figures also go to.
    tracker: Option<crate::tracking::TrackerHandle>,
    /// `--report`: refreshed after each evaluation.
    live_report: Option<LiveReport>,
    pub report: LaunchReport,
}

/// The report page refreshed while training runs: its file, the metrics it reads, the plan.
struct LiveReport {
    out: String,
    metrics: String,
    plan: crate::planning::Planned,
    warned: bool,
}

impl LiveReport {
    fn refresh(&mut self) {
        let inputs = crate::report::metrics(&self.metrics).map(|m| crate::report::Inputs {
            metrics_file: &self.metrics,
            metrics: m,
            trace: None,
            plan: Some(&self.plan),
            live: true,
        });
        let written = inputs
            .map_err(anyhow::Error::from)
            .and_then(|i| crate::report::write(&self.out, &crate::report::render(&i)));
        if let Err(e) = written
            && !self.warned
        {
            self.warned = true;
            crate::note!("warning: the report is not refreshed: {e:#}");
        }
    }
}

impl Progress {
    /// Starts the bar and, when this launch runs the last rank, the metrics file.
    pub fn start(spec: &LaunchSpec) -> Result<Self> {
        let last_stage = spec.last_stage;
        let shows_loss = spec.stages.iter().any(|(k, _)| *k == last_stage);
        let metrics = match (&spec.metrics, shows_loss) {
            (Some(p), true) => Some(
                if spec.append_metrics {
                    MetricsWriter::append(p)
                } else {
                    MetricsWriter::create(p)
                }
                .with_context(|| format!("{p}: cannot create the metrics file"))?,
            ),
            _ => None,
        };
        let live_report = match (&spec.report, &spec.metrics, shows_loss) {
            (Some(out), Some(m), true) => {
                crate::job::explain(&spec.job, None)
                    .ok()
                    .map(|plan| LiveReport {
                        out: out.clone(),
                        metrics: m.clone(),
                        plan,
                        warned: false,
                    })
            }
            _ => None,
        };
        Ok(Progress {
            bar: bar(spec.steps),
            metrics,
            tracker: if shows_loss {
                spec.tracker.clone()
            } else {
                None
            },
            live_report,
            last_stage,
            shows_loss,
            batch: spec.batch,
            train: spec.job.topo.train.clone(),
            report: LaunchReport::default(),
        })
    }

    /// A line above the bar.
    pub fn println(&self, line: String) {
        self.bar.println(line);
    }

    /// Rank `k` finished `step` (1-based; its loss if it holds the last chunk, and the
    /// gradient norm if it computed one).
    pub fn step(
        &mut self,
        k: usize,
        step: u64,
        (loss, grad_norm): (Option<f64>, Option<f64>),
        step_ms: f64,
    ) -> Result<()> {
        if k == self.last_stage {
            let m = StepMetrics {
                step,
                loss: loss.unwrap_or(f64::NAN),
                step_ms,
                samples_per_sec: self.batch as f64 / (step_ms / 1e3).max(1e-9),
                lr: Some(self.train.lr_at(step.saturating_sub(1))),
                grad_norm,
            };
            self.bar.set_position(m.step);
            self.bar.set_message(format!(
                "loss {:.4}  {:.0} samples/s",
                m.loss, m.samples_per_sec
            ));
            self.report.last = Some(m.clone());
            if let Some(t) = &self.tracker {
                t.step(&m);
            }
            if let Some(w) = self.metrics.as_mut() {
                w.write(&m)
                    .with_context(|| format!("{}: cannot write metrics", w.path()))?;
            }
        } else if !self.shows_loss {
            self.bar.set_position(step);
        }
        Ok(())
    }

    /// Rank `k` evaluated the model (only the last rank's figures count).
    pub fn eval(&mut self, k: usize, m: EvalMetrics) -> Result<()> {
        if k != self.last_stage {
            return Ok(());
        }
        self.bar.println(format!(
            "step {}: {}",
            m.step,
            crate::metrics::describe_eval(&m)
        ));
        self.report.last_eval = Some(m);
        if let Some(t) = &self.tracker {
            t.eval(&m);
        }
        if let Some(w) = self.metrics.as_mut() {
            w.write_eval(&m)
                .with_context(|| format!("{}: cannot write metrics", w.path()))?;
        }
        if let Some(r) = self.live_report.as_mut() {
            r.refresh();
        }
        Ok(())
    }

    /// Clears the bar; the figures gathered.
    pub fn finish(self) -> LaunchReport {
        self.bar.finish_and_clear();
        self.report
    }
}

fn bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg}  ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
