//! What a cluster engine tells the process it starts: the rank, the world size and where rank
//! 0 will host the rendezvous, read from the engine's own environment variables, so that
//! `brigade stage` needs no flags under Slurm, torchrun or a Kubernetes Indexed Job (flags
//! still win). Pure: the environment comes in as a lookup function, so tests pass tables.

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

fn number(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<usize>, EnvError> {
    match env(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| EnvError {
            var,
            value: v,
            why: "not a non-negative integer".into(),
        }),
    }
}

/// Reads the engine's variables: Slurm (`SLURM_PROCID`, `SLURM_NTASKS`, the first node of
/// `SLURM_STEP_NODELIST` or `SLURM_JOB_NODELIST`), torchrun (`RANK`, `WORLD_SIZE`,
/// `MASTER_ADDR`, `MASTER_PORT`: brigade's rendezvous takes `MASTER_PORT + 1`, since torchrun's
/// own store holds `MASTER_PORT`), Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`; the
/// rendezvous comes from `--rendezvous`). `None` when no engine is recognised.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<EngineContext>, EnvError> {
    if let Some(rank) = number(env, "SLURM_PROCID")? {
        let world = number(env, "SLURM_NTASKS")?.map(|w| (w, "SLURM_NTASKS"));
        let (var, list) = match (env("SLURM_STEP_NODELIST"), env("SLURM_JOB_NODELIST")) {
            (Some(l), _) => ("SLURM_STEP_NODELIST", Some(l)),
            (None, Some(l)) => ("SLURM_JOB_NODELIST", Some(l)),
            _ => ("SLURM_JOB_NODELIST", None),
        };
        let first = match list {
            Some(l) => Some(
                expand_nodelist(&l)
                    .map_err(|why| EnvError {
                        var,
                        value: l.clone(),
                        why,
                    })?
                    .into_iter()
                    .next()
                    .ok_or_else(|| EnvError {
                        var,
                        value: l.clone(),
                        why: "an empty node list".into(),
                    })?,
            ),
            None => None,
        };
        return Ok(Some(EngineContext {
            engine: "slurm",
            rank,
            rank_var: "SLURM_PROCID",
            world,
            rendezvous: first.map(|h| (h, None)),
        }));
    }
    if let Some(rank) = number(env, "RANK")? {
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
        return Ok(Some(EngineContext {
            engine: "torchrun",
            rank,
            rank_var: "RANK",
            world,
            rendezvous: env("MASTER_ADDR").map(|a| (a, port)),
        }));
    }
    if let Some(rank) = number(env, "JOB_COMPLETION_INDEX")? {
        return Ok(Some(EngineContext {
            engine: "kubernetes",
            rank,
            rank_var: "JOB_COMPLETION_INDEX",
            world: None,
            rendezvous: None,
        }));
    }
    Ok(None)
}

/// Expands a Slurm host list: `n[1-3,7],gpu05` → n1, n2, n3, n7, gpu05; zero padding is kept
/// (`n[01-03]` → n01, n02, n03).
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, String> {
    // Split on commas outside brackets.
    let (mut items, mut depth, mut cur) = (Vec::new(), 0i32, String::new());
    for c in list.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced brackets".into());
        }
        if c == ',' && depth == 0 {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    items.push(cur);
    let mut out = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let Some((prefix, rest)) = item.split_once('[') else {
            out.push(item.to_string());
            continue;
        };
        let (ranges, suffix) = rest
            .split_once(']')
            .ok_or_else(|| format!("{item}: no closing bracket"))?;
        if suffix.contains('[') {
            return Err(format!(
                "{item}: one bracket group per host name is supported"
            ));
        }
        for part in ranges.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let width = lo.len();
            let (a, b): (u64, u64) = match (lo.parse(), hi.parse()) {
                (Ok(a), Ok(b)) if a <= b && b - a < 100_000 => (a, b),
                _ => return Err(format!("{item}: bad range {part:?}")),
            };
            out.extend((a..=b).map(|n| format!("{prefix}{n:0width$}{suffix}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

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
