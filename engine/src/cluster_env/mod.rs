//! What a cluster engine tells the process it starts: the rank, the world size and where rank
//! 0 will host the rendezvous, read from the engine's own environment variables, so that
//! `brigade stage` needs no flags under Slurm, torchrun or a Kubernetes Indexed Job (flags
//! still win). Each engine's contract is one file implementing [`Engine`], listed in
//! [`ENGINES`]. Spark is the exception that needs none: its barrier tasks exchange addresses
//! themselves (`allGather`) and pass `--stage` and `--peers` (python/brigade_spark). Pure: the
//! environment comes in as a lookup function, so tests pass tables.

mod contract;
mod kubernetes;
mod slurm;
mod torchrun;

use contract::number;
pub use contract::{Engine, EngineContext, Env, EnvError};
pub use slurm::expand_nodelist;

/// The engines brigade recognises, in the order their variables are looked for (the first
/// whose rank variable is set wins).
pub static ENGINES: &[&dyn Engine] = &[&slurm::Slurm, &torchrun::Torchrun, &kubernetes::Kubernetes];

/// Reads the variables of the first engine in [`ENGINES`] whose rank variable is set; `None`
/// when no engine is recognised.
pub fn from_env(env: &Env) -> Result<Option<EngineContext>, EnvError> {
    for engine in ENGINES {
        if let Some(rank) = number(env, engine.rank_var())? {
            return engine.read(env, rank).map(Some);
        }
    }
    Ok(None)
}

/// "A, B or C" of every engine's `part`.
pub fn either(part: impl Fn(&dyn Engine) -> &'static str) -> String {
    let names: Vec<&str> = ENGINES.iter().map(|e| part(*e)).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A process environment of `vars` alone, for tests of what reads one.
#[cfg(test)]
pub(crate) fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::fake_env as env;
    use super::*;

    #[test]
    fn node_lists_expand() {
        let table: [(&str, &[&str]); 5] = [
            ("n[1-3,7],gpu05", &["n1", "n2", "n3", "n7", "gpu05"]),
            ("node[01-03]", &["node01", "node02", "node03"]),
            ("a", &["a"]),
            ("x[9-10]-ib", &["x9-ib", "x10-ib"]),
            ("n1,n2", &["n1", "n2"]),
        ];
        for (list, want) in table {
            assert_eq!(expand_nodelist(list).unwrap(), want, "{list}");
        }
        for bad in ["n[1-3", "n1-3]", "n[3-1]", "n[a-b]", "n[1-2]x[3]"] {
            assert!(expand_nodelist(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn engines_are_recognised_by_their_variables() {
        let slurm = from_env(&env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "n[7-8]"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (slurm.engine, slurm.rank, slurm.world, slurm.rendezvous),
            (
                "slurm",
                1,
                Some((2, "SLURM_NTASKS")),
                Some(("n7".into(), None))
            )
        );
        let torch = from_env(&env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (torch.engine, torch.world, torch.rendezvous),
            (
                "torchrun",
                Some((4, "WORLD_SIZE")),
                Some(("10.0.0.1".into(), Some(29501)))
            )
        );
        let k8s = from_env(&env(&[("JOB_COMPLETION_INDEX", "3")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (k8s.engine, k8s.rank, k8s.rendezvous),
            ("kubernetes", 3, None)
        );
        assert_eq!(from_env(&env(&[])).unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from_env(&env(&[("SLURM_PROCID", "x")])).unwrap_err();
        assert_eq!(e.var, "SLURM_PROCID");
        let e = from_env(&env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_JOB_NODELIST", "n[1-"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("SLURM_JOB_NODELIST") && e.to_string().contains("unbalanced")
        );
        let e = from_env(&env(&[("RANK", "0"), ("MASTER_PORT", "65535")])).unwrap_err();
        assert_eq!(e.var, "MASTER_PORT");
    }
}
