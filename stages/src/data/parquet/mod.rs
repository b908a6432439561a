//! `[data] source = "parquet"`: samples from Parquet files (Spark's and pyarrow's output),
//! streamed by row group on a reader thread.
//!
//! A rank reads only what its chunks need: the rank holding the first chunk reads the feature
//! (or token) columns, the rank holding the last reads the label column (token models: the
//! token column, whose shifted copy is the targets); ranks in between open nothing. Both
//! readers run the same [`order`], so the last rank's targets are those of the first rank's
//! inputs without sending them (see docs/data.md for why targets are read, not sent).
//!
//! Training batches: a thread decodes row groups (projected to the role's columns), runs the
//! shuffle and sends one step's rows at a time through a channel bounded at `data.prefetch`
//! steps, so memory is the shuffle buffer plus a few batches and one row group, whatever the
//! dataset's size, and the first stage finds its next batch ready. Validation: another thread
//! per evaluation reads the validation rows in file order, one micro-batch at a time.

mod columns;
mod dataset;
mod decode;
mod files;
mod flat;
mod order;

use super::{Batches, DataError, Role};
use crate::act::Act;
use crate::loss::Target;
use brigade_partitioner::{ConfigError, Topology};
use burn::prelude::*;
use columns::Layout;
use crossbeam_channel::{Receiver, bounded};
use flat::{Flat, Shapes};
use order::Stream;
use std::collections::HashMap;
use std::sync::Arc;

pub use dataset::{DataFacts, Dataset};

/// Checks the data `topo` names (every file's schema and statistics, the first row group) and
/// returns what the plan records about it; `None` for synthetic data.
pub fn inspect(topo: &Topology) -> Result<Option<DataFacts>, ConfigError> {
    match topo.data.parquet() {
        None => Ok(None),
        Some(source) => Ok(Some(Dataset::open(topo, source)?.facts())),
    }
}

/// Parquet batches for one rank.
pub struct ParquetData {
    role: Role,
    layout: Arc<Layout>,
    shapes: Shapes,
    microbatch: usize,
    /// Micro-batches per step (all replicas').
    microbatches: u64,
    facts: DataFacts,
    train: Option<Receiver<Result<Flat, DataError>>>,
    /// The step being read, and its samples.
    current: Option<(u64, Flat)>,
    validation: Option<Arc<dataset::Split>>,
    eval: Option<EvalPass>,
}

/// One evaluation's reader and the micro-batches received but not yet used by every role.
struct EvalPass {
    rx: Receiver<Result<Flat, DataError>>,
    next: u64,
    held: HashMap<u64, (Arc<Flat>, usize)>,
}

impl ParquetData {
    /// Opens the data for a rank in `role`, positioned at step `start_step`. A rank with no
    /// role opens nothing.
    pub fn open(topo: &Topology, role: Role, start_step: u64) -> Result<Self, ConfigError> {
        Self::open_from(topo, role, Some(start_step))
    }

    /// The validation data only, for both roles (`brigade evaluate`): no training reader.
    pub fn open_validation(topo: &Topology) -> Result<Self, ConfigError> {
        Self::open_from(topo, Role::BOTH, None)
    }

    fn open_from(topo: &Topology, role: Role, start: Option<u64>) -> Result<Self, ConfigError> {
        let source = topo
            .data
            .parquet()
            .expect("ParquetData is opened for a parquet source");
        let graph = topo.model.graph();
        let output = graph.layer(graph.len() - 1).output_shape.clone();
        let layout = Arc::new(Layout::of(topo, &source.columns));
        let mut data = ParquetData {
            role,
            layout: layout.clone(),
            shapes: Shapes {
                input: topo.model.input.clone(),
                output,
            },
            microbatch: topo.train.microbatch_size(),
            microbatches: topo.train.microbatches as u64,
            facts: DataFacts {
                train_rows: 0,
                validation_rows: 0,
            },
            train: None,
            current: None,
            validation: None,
            eval: None,
        };
        if !(role.inputs || role.targets) {
            return Ok(data);
        }
        let ds = Dataset::open(topo, source)?;
        data.facts = ds.facts();
        data.layout = ds.layout.clone();
        data.validation = ds.validation.clone();
        let Some(start_step) = start else {
            return Ok(data);
        };
        let (tx, rx) = bounded(source.prefetch);
        let (split, layout) = (ds.train.clone(), ds.layout.clone());
        let rows: Vec<usize> = split.groups.iter().map(|g| g.rows).collect();
        let (seed, cap, batch) = (topo.data.seed, source.shuffle_buffer, topo.train.batch);
        // The stream passes every row of the step (its order depends on them all); only the
        // rank's share of them is laid out as samples.
        let (first, count) = role.share.range(topo.train.microbatches as u64);
        let m = topo.train.microbatch_size();
        let mine = (first as usize * m).min(batch)..((first + count) as usize * m).min(batch);
        std::thread::Builder::new()
            .name("brigade-data".into())
            .spawn(move || {
                let mut load = |g: usize| {
                    split
                        .decode(g, &layout, role)
                        .map_err(|e| DataError(e.to_string()))
                };
                let ids = Stream::skipped(rows, seed, cap, start_step * batch as u64);
                let mut stream = match ids.materialize(&mut load) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let step = (0..batch)
                        .map(|_| stream.next(&mut load))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|rows| Flat::of(&rows[mine.clone()], &layout, role));
                    let failed = step.is_err();
                    // The receiver is gone when training ends: so is this thread.
                    if tx.send(step).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the data reader thread");
        data.train = Some(rx);
        Ok(data)
    }

    /// What this rank found in the data (zeros for a rank that reads none).
    pub fn facts(&self) -> DataFacts {
        self.facts
    }

    /// Reads up to step `step`; returns the first row of micro-batch `mb` in it.
    fn advance(&mut self, step: u64, mb: u64) -> Result<usize, DataError> {
        let rx = self
            .train
            .as_ref()
            .ok_or_else(|| DataError("this rank reads no data".into()))?;
        loop {
            match &self.current {
                Some((s, _)) if *s == step => break,
                Some((s, _)) if *s > step => {
                    return Err(DataError(format!(
                        "step {step} was asked for after step {s}: batches are read in order"
                    )));
                }
                _ => {
                    let next = self.current.as_ref().map(|(s, _)| s + 1);
                    let rows = rx
                        .recv()
                        .map_err(|_| DataError("the data reader thread stopped".into()))??;
                    // The reader starts at the first step this rank runs.
                    self.current = Some((next.unwrap_or(step), rows));
                }
            }
        }
        let rows = self.current.as_ref().expect("set above").1.rows;
        let Some(at) = self.role.share.position(mb, self.microbatches) else {
            let (first, count) = self.role.share.range(self.microbatches);
            return Err(DataError(format!(
                "micro-batch {mb} is not this replica's: it reads micro-batches {first}..{} of each step",
                first + count
            )));
        };
        let a = at as usize * self.microbatch;
        if a + self.microbatch > rows {
            return Err(DataError(format!(
                "micro-batch {mb} is past the step's batch"
            )));
        }
        Ok(a)
    }

    fn current(&self) -> &Flat {
        &self.current.as_ref().expect("advanced").1
    }

    fn eval_rows(&mut self, mb: u64) -> Result<Arc<Flat>, DataError> {
        let uses = usize::from(self.role.inputs) + usize::from(self.role.targets);
        let restart = match &self.eval {
            None => true,
            Some(p) => mb == 0 && !p.held.contains_key(&0) && p.next != 0,
        };
        if restart {
            self.eval = Some(self.start_eval()?);
        }
        let pass = self.eval.as_mut().expect("started above");
        while !pass.held.contains_key(&mb) {
            let rows = pass.rx.recv().map_err(|_| {
                DataError(format!("validation micro-batch {mb} is past the data"))
            })??;
            pass.held.insert(pass.next, (Arc::new(rows), uses));
            pass.next += 1;
        }
        let (rows, left) = pass.held.get_mut(&mb).expect("received above");
        *left -= 1;
        let rows = rows.clone();
        if *left == 0 {
            pass.held.remove(&mb);
        }
        Ok(rows)
    }

    fn start_eval(&self) -> Result<EvalPass, DataError> {
        let split = self
            .validation
            .clone()
            .ok_or_else(|| DataError("there is no validation data".into()))?;
        let (layout, role, m) = (self.layout.clone(), self.role, self.microbatch);
        let (tx, rx) = bounded(2);
        std::thread::Builder::new()
            .name("brigade-eval-data".into())
            .spawn(move || {
                let mut mb = Vec::with_capacity(m);
                for g in 0..split.groups.len() {
                    let rows = match split.decode(g, &layout, role) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(DataError(e.to_string())));
                            return;
                        }
                    };
                    for r in rows {
                        mb.push(r);
                        if mb.len() == m {
                            let flat = Flat::of(&std::mem::take(&mut mb), &layout, role);
                            if tx.send(Ok(flat)).is_err() {
                                return;
                            }
                        }
                    }
                }
                if !mb.is_empty() {
                    let _ = tx.send(Ok(Flat::of(&mb, &layout, role)));
                }
            })
            .expect("spawning the validation reader thread");
        Ok(EvalPass {
            rx,
            next: 0,
            held: HashMap::new(),
        })
    }
}

impl Batches for ParquetData {
    fn inputs(&mut self, step: u64, mb: u64, device: &Device) -> Result<Act, DataError> {
        let a = self.advance(step, mb)?;
        let m = self.microbatch;
        Ok(self
            .current()
            .inputs(a, m, &self.layout, &self.shapes, device))
    }

    fn targets(&mut self, step: u64, mb: u64, device: &Device) -> Result<Target, DataError> {
        let a = self.advance(step, mb)?;
        let m = self.microbatch;
        Ok(self
            .current()
            .targets(a, m, &self.layout, &self.shapes, device))
    }

    fn eval_inputs(&mut self, mb: u64, device: &Device) -> Result<Act, DataError> {
        let f = self.eval_rows(mb)?;
        Ok(f.inputs(0, f.rows, &self.layout, &self.shapes, device))
    }

    fn eval_targets(&mut self, mb: u64, device: &Device) -> Result<Target, DataError> {
        let f = self.eval_rows(mb)?;
        Ok(f.targets(0, f.rows, &self.layout, &self.shapes, device))
    }
}
