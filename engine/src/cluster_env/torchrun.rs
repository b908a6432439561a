//! torchrun: `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`. brigade's rendezvous takes
//! `MASTER_PORT + 1`, since torchrun's own store holds `MASTER_PORT`.

use super::contract::{Engine, EngineContext, Env, EnvError, number};

pub struct Torchrun;

impl Engine for Torchrun {
    fn starter(&self) -> &'static str {
        "torchrun"
    }

    fn rank_var(&self) -> &'static str {
        "RANK"
    }

    fn read(&self, env: &Env, rank: usize) -> Result<EngineContext, EnvError> {
        let world = number(env, "WORLD_SIZE")?.map(|w| (w, "WORLD_SIZE"));
        let port = match env("MASTER_PORT") {
            None => None,
            Some(p) => Some(
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .and_then(|p| p.checked_add(1))
                    .ok_or(EnvError {
                        var: "MASTER_PORT",
                        value: p,
                        why: "not a port below 65535".into(),
                    })?,
            ),
        };
        Ok(EngineContext {
            engine: "torchrun",
            rank,
            rank_var: "RANK",
            world,
            rendezvous: env("MASTER_ADDR").map(|a| (a, port)),
        })
    }
}
