//! The interface every engine's contract implements, and what it yields.

/// The environment: a variable's value, if set.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// One cluster engine's contract with the processes it starts.
pub trait Engine: Sync {
    /// Who starts a rank, for messages ("Slurm", "a Kubernetes Indexed Job").
    fn starter(&self) -> &'static str;
    /// The variable that holds the rank; its presence says the engine started this process.
    fn rank_var(&self) -> &'static str;
    /// What the engine says, given the rank read from [`Engine::rank_var`].
    fn read(&self, env: &Env, rank: usize) -> Result<EngineContext, EnvError>;
}

/// The engine a process was started by, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContext {
    /// "slurm", "torchrun" or "kubernetes".
    pub engine: &'static str,
    pub rank: usize,
    /// The variable the rank came from (for messages).
    pub rank_var: &'static str,
    /// The number of ranks the engine started, when it says.
    pub world: Option<(usize, &'static str)>,
    /// Where rank 0 hosts the rendezvous, when the engine says (host, port).
    pub rendezvous: Option<(String, Option<u16>)>,
}

/// An environment variable that does not say what brigade needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {why}")]
pub struct EnvError {
    pub var: &'static str,
    pub value: String,
    pub why: String,
}

/// A variable holding a non-negative integer, if set.
pub fn number(env: &Env, var: &'static str) -> Result<Option<usize>, EnvError> {
    match env(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| EnvError {
            var,
            value: v,
            why: "not a non-negative integer".into(),
        }),
    }
}
