//! The rank runtime: what one rank's process is (`brigade stage`). It loads the job plan,
//! finds its rank ([`identify`]: `--stage` or the cluster engine's environment), builds its
//! chunks, data, executor and checkpoint writer, finds its peers ([`peers`]), connects the
//! transport and drives the executor, reporting `StageEvent`s on stdout for its supervisor.

pub mod identify;
mod options;
pub mod peers;
mod process;
mod rank;
pub mod threads;

pub use identify::rank_of;
pub use options::{CheckpointOptions, RankOptions};
pub use peers::{check_rendezvous, free_endpoint};
pub use rank::run;
