//! brigade's planning layer: topology files, the layer graph, costs and partitioning.
//!
//! Pure computation — no burn, no networking, no async runtime — so it builds and tests in seconds
//! and every other crate can depend on it.
//!
//! ```
//! use brigade_partitioner::{Costs, parse, plan};
//!
//! let toml = r#"
//!     [model]
//!     input = [64]
//!     layers = [ { kind = "linear", out = 128 }, { kind = "relu" }, { kind = "linear", out = 10 } ]
//!     [train]
//!     batch = 64
//!     microbatches = 8
//!     [[hosts]]
//!     name = "local"
//!     address = "127.0.0.1"
//!     devices = ["cpu", "cpu"]
//!     [partition]
//!     stages = 2
//! "#;
//! let topo = parse("example.toml", toml, &[]).unwrap();
//! let graph = topo.model.graph();
//! let costs = Costs::estimate(&graph, topo.train.microbatch_size());
//! // Live micro-batches per stage come from the schedule (the engine counts them); GPipe keeps all 8.
//! let plan = plan::plan(&topo, &graph, &costs, &[8, 8]).unwrap();
//! assert_eq!(plan.stages.len(), 2);
//! assert_eq!(plan.stages[1].layers[1], 3);
//! ```

pub mod buckets;
pub mod cost;
pub mod graph;
pub mod hf;
mod load;
pub mod model;
pub mod partition;
pub mod plan;
pub mod topology;

use brigade_layers::reader;
/// Layer kinds, and the section reader and errors the loader shares with them.
pub use brigade_layers::{self as layers, error};

pub use cost::{Costs, Profile, ProfiledLayer, ThreadTiming};
pub use error::ConfigError;
pub use graph::LayerGraph;
pub use layers::{LayerKind, WeightGrads};
pub use load::{apply_override, keep_hosts, key_given, load, parse, parse_at};
pub use topology::*;
