//! Starting ranks and watching them: the supervisor behind `brigade train` (every rank on this
//! host), `brigade launch --host NAME` (that host's ranks) and the restart agents.
//!
//! The launcher plans once: it writes the job plan into the run directory and hands that file
//! to every rank, a `brigade stage` process started through a [`Spawner`] (child processes of
//! this one: [`LocalSpawner`]). The [`supervisor`] reads their `StageEvent`s, shows progress
//! and writes metrics from the rank holding the last chunk ([`progress`]), and — if any rank
//! fails — stops every other rank at once and reports which failed, on which host, and why (in
//! the rank's own words, from its `error` event; [`failure`]). Children die with the launcher
//! (PR_SET_PDEATHSIG), so nothing is left behind. Around it: restarts on this host
//! ([`restart`]) and agents that meet at a rendezvous before every attempt ([`agent`],
//! [`host_agent`], [`rank_agent`]).

pub mod agent;
pub mod failure;
pub mod for_job;
pub mod host_agent;
pub mod progress;
pub mod rank_agent;
mod ranks;
pub mod restart;
pub mod spawn;
pub mod spec;
pub mod supervisor;

pub use failure::BadInput;
pub use restart::{RestartPolicy, launch_with_restarts};
pub use spawn::{LocalSpawner, Spawner};
pub use spec::{LaunchReport, LaunchSpec};
pub use supervisor::{launch, supervise};
