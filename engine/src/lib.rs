//! brigade's engine: the `brigade` command line on top of the planner and the stages.
//!
//! ```no_run
//! // `brigade plan topologies/quickstart.toml` is `cli::main()` with those arguments.
//! brigade_engine::cli::main();
//! ```

pub mod cli;
pub mod fmt;
pub mod metrics;
