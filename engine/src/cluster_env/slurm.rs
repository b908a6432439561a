//! Slurm: `SLURM_PROCID` (the rank), `SLURM_NTASKS` (the world), and the first node of
//! `SLURM_STEP_NODELIST` or `SLURM_JOB_NODELIST` (where rank 0 hosts the rendezvous, on
//! `--rendezvous-port`).

use super::contract::{Engine, EngineContext, Env, EnvError, number};

pub struct Slurm;

impl Engine for Slurm {
    fn starter(&self) -> &'static str {
        "Slurm"
    }

    fn rank_var(&self) -> &'static str {
        "SLURM_PROCID"
    }

    fn read(&self, env: &Env, rank: usize) -> Result<EngineContext, EnvError> {
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
        Ok(EngineContext {
            engine: "slurm",
            rank,
            rank_var: "SLURM_PROCID",
            world,
            rendezvous: first.map(|h| (h, None)),
        })
    }
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
