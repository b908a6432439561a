//! brigade's engine: schedules, the simulator, the executor and its transports, launchers and
//! the `brigade` command line, on top of the planner and the stages.
//!
//! ```
//! use brigade_engine::schedule::{compute_order, one_f_one_b};
//! use brigade_engine::sim::{StageCost, simulate};
//!
//! // Stage 0 of a 2-stage 1F1B pipeline over 3 micro-batches:
//! assert_eq!(compute_order(&one_f_one_b(0, 2, 3)), "F0 F1 B0 F2 B1 B2 step");
//! let lists = vec![one_f_one_b(0, 2, 3), one_f_one_b(1, 2, 3)];
//! let costs = vec![StageCost { forward_ms: 1.0, backward_ms: 2.0, ..Default::default() }; 2];
//! assert_eq!(simulate(&lists, &costs).unwrap().step_ms, 12.0);
//! ```

pub mod cli;
pub mod endpoints;
pub mod executor;
pub mod fmt;
pub mod identity;
pub mod launcher;
pub mod metrics;
pub mod params_io;
pub mod planning;
pub mod schedule;
pub mod sim;
pub mod trace;
pub mod transport;
