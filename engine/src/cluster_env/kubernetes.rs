//! Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` is the rank; the world and the rendezvous
//! come from the command line (`--rendezvous`).

use super::contract::{Engine, EngineContext, Env, EnvError};

pub struct Kubernetes;

impl Engine for Kubernetes {
    fn starter(&self) -> &'static str {
        "a Kubernetes Indexed Job"
    }

    fn rank_var(&self) -> &'static str {
        "JOB_COMPLETION_INDEX"
    }

    fn read(&self, _env: &Env, rank: usize) -> Result<EngineContext, EnvError> {
        Ok(EngineContext {
            engine: "kubernetes",
            rank,
            rank_var: "JOB_COMPLETION_INDEX",
            world: None,
            rendezvous: None,
        })
    }
}
