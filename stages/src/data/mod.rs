//! Where samples come from: synthetic data (`data.source = "synthetic"`) and Parquet files
//! (`"parquet"`), behind the [`Batches`] trait the executor reads through.

pub mod parquet;
mod prefetch;
mod synthetic;

use crate::act::Act;
use crate::loss::Target;
use brigade_partitioner::{DataSource, Topology};
use burn::prelude::*;

pub use prefetch::Prefetched;
pub use synthetic::SyntheticData;

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(pub String);

/// Where a pipeline's inputs and targets come from: the first chunk asks for inputs, the last
/// for targets, by (step, micro-batch). Implementations must give every split of the model the
/// same samples for the same (step, micro-batch), so pipelined runs equal the reference.
pub trait Batches: Send {
    /// The inputs of micro-batch `mb` of step `step` (0-based), `[microbatch, ..input]`.
    fn inputs(&mut self, step: u64, mb: u64, device: &Device) -> Result<Act, DataError>;
    /// The targets of micro-batch `mb` of step `step`.
    fn targets(&mut self, step: u64, mb: u64, device: &Device) -> Result<Target, DataError>;
    /// The inputs of validation micro-batch `mb` (0-based within one evaluation; the last may
    /// be short). Asked in ascending order, once per evaluation.
    fn eval_inputs(&mut self, mb: u64, device: &Device) -> Result<Act, DataError> {
        let _ = (mb, device);
        Err(DataError("this data source has no validation data".into()))
    }
    /// The targets of validation micro-batch `mb`.
    fn eval_targets(&mut self, mb: u64, device: &Device) -> Result<Target, DataError> {
        let _ = (mb, device);
        Err(DataError("this data source has no validation data".into()))
    }
}

/// What a rank reads from the data: inputs (it holds the first chunk), targets (the last), or
/// both, of its share of each step. Parquet readers read only the columns their role needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Role {
    pub inputs: bool,
    pub targets: bool,
    pub share: Share,
}

impl Role {
    pub const BOTH: Role = Role {
        inputs: true,
        targets: true,
        share: Share::Whole,
    };
}

/// Which micro-batches of each step a rank reads. With replicas, replica `d` trains only
/// micro-batches `first .. first + count` of every step, so its readers make (synthetic) or lay
/// out (Parquet) only those; the micro-batch numbers asked for stay the step's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    #[default]
    Whole,
    Part {
        first: u64,
        count: u64,
    },
}

impl Share {
    /// `(first, count)` within a step of `microbatches`.
    pub fn range(self, microbatches: u64) -> (u64, u64) {
        match self {
            Share::Whole => (0, microbatches),
            Share::Part { first, count } => (first, count),
        }
    }

    /// Where micro-batch `mb` sits in the share (`None`: another replica's).
    pub fn position(self, mb: u64, microbatches: u64) -> Option<u64> {
        let (first, count) = self.range(microbatches);
        (first..first + count).contains(&mb).then(|| mb - first)
    }
}

/// The data `topo` names, for a rank in `role`, from step `start_step` on: synthetic samples
/// (made ahead on helper threads, [`Prefetched`]), or a Parquet reader (opened and checked here; errors name the file and column).
pub fn open(
    topo: &Topology,
    role: Role,
    start_step: u64,
) -> Result<Box<dyn Batches>, brigade_partitioner::ConfigError> {
    Ok(match &topo.data.source {
        DataSource::Synthetic => Box::new(Prefetched::new(
            SyntheticData::new(topo),
            topo.train.microbatches,
            role.share,
        )),
        DataSource::Parquet(_) => Box::new(parquet::ParquetData::open(topo, role, start_step)?),
    })
}
