//! What a schedule needs, as data: each schedule's file declares its own (`NEEDS`), and the
//! planner, the validator and the stages read these properties instead of asking which
//! schedule runs.

/// What a schedule asks of the loader, the planner, the validator and the stages. Peak live
/// micro-batches and memory per rank are not here: they are counted from the instruction
/// lists themselves ([`crate::peak_live_of`]), which every schedule already gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The backward is split into B (the input gradient, `Backward`) and W (the weight
    /// gradients, `BackwardWeight`): stages keep W's inputs until W, and the planner charges
    /// B and W apart.
    pub splits_weight_grads: bool,
    /// Whether `train.batch_weight_grads` may batch the weight gradients over the step's
    /// micro-batches (a schedule that runs W per micro-batch at its own time may not).
    pub batches_weight_grads: bool,
    /// A rank may hold several chunks, chunk c on rank c mod K, the same number on every rank;
    /// otherwise a rank holds one chunk.
    pub round_robin_chunks: bool,
    /// Chunks per rank when the topology does not write `partition.chunks_per_rank`.
    pub default_chunks_per_rank: usize,
    /// Each replica's micro-batches must be a multiple of its ranks.
    pub microbatches_multiple_of_ranks: bool,
    /// Trains reproducibly, equal to `reference`, on CUDA devices (docs/gpu.md).
    pub exact_on_cuda: bool,
}
