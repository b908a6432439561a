//! brigade's engine: the executor and its transports, launchers and the `brigade` command line,
//! on top of the planner, the stages, and the schedules and simulator (re-exported here).
//!
//! ```
//! use brigade_engine::schedule::{ChunkSlot, compute_order, one_f_one_b};
//! use brigade_engine::sim::{SimCosts, simulate};
//!
//! // Chunk 0 of a 2-chunk 1F1B pipeline over 3 micro-batches:
//! assert_eq!(compute_order(&one_f_one_b(ChunkSlot::chain(0, 2), 3)), "F0 F1 B0 F2 B1 B2 step");
//! // Rank k holds chunk k; edge 0 joins them.
//! let lists: Vec<_> = (0..2).map(|k| one_f_one_b(ChunkSlot::chain(k, 2), 3)).collect();
//! let costs = SimCosts::uniform_chain(2, 1.0, 2.0);
//! assert_eq!(simulate(&lists, &costs).unwrap().step_ms, 12.0);
//! ```

/// `eprintln!` that never panics: a launcher whose stderr is closed (piped into `head`, a
/// terminal gone) must finish its job and report its exit status, not die writing a message.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod allreduce;
pub mod cli;
pub mod cluster_env;
pub mod endpoints;
pub mod events;
pub mod executor;
pub mod failpoint;
pub mod fmt;
pub mod identity;
pub mod job;
pub mod launcher;
pub mod message;
pub mod metrics;
pub mod params_io;
pub mod planning;
pub mod reduce_cost;
pub mod reference;
pub mod rendezvous;
pub mod report;
pub mod rounds;
pub mod runtime;
/// The schedules and the simulator live in their own pure crate (docs/decisions/0014-pure-crates.md);
/// re-exported under the names the engine has always used.
pub use brigade_schedules as schedule;
pub use brigade_schedules::sim;
pub mod shape;
pub mod trace;
pub mod tracking;
pub mod transport;
