//! Compute threads per rank (decision 0019). burn's flex kernels run on the rayon pool of the
//! thread that calls them; a rank's process builds one global pool of T threads with its own
//! thread as worker 0, so the step loop runs its products in place and T − 1 workers share
//! them. Where the rank's cores are known (its process was given exactly T, or the job's
//! ranks of this host fit its cores), each worker is pinned to one core. Products split only
//! their output tiles over threads, so a rank computes the same bits on any thread count (the
//! full sums that rayon would split are summed in a fixed order, `stages/src/stage/clip.rs`).
//!
//! Which count: `--threads`, else what the plan states for the rank ("cpu:T", `[partition]
//! threads`), else the cores the engine gave the task (`SLURM_CPUS_PER_TASK`,
//! `BRIGADE_TASK_CPUS` that brigade_spark sets from `spark.task.cpus`, torchrun's
//! `OMP_NUM_THREADS`), else one — as before threads per rank existed.

use super::options::RankOptions;
use crate::cluster_env::{Env, EnvError};
use crate::job::Job;
use anyhow::{Context, Result};

/// How many threads a rank computes on, and why (for the rank's note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadChoice {
    pub threads: usize,
    pub why: String,
    /// Whether anyone said (flag, plan or engine); the unsaid default is not pinned.
    pub stated: bool,
}

/// The variables that say how many cores an engine gave this task, in the order they are read.
pub const TASK_CPU_VARS: &[&str] = &["SLURM_CPUS_PER_TASK", "BRIGADE_TASK_CPUS"];

/// Chooses the rank's thread count: `flag`, else `planned` (what the plan states), else the
/// engine's variables (`engine` names the engine that started the process, if any).
pub fn choose(
    flag: Option<usize>,
    planned: Option<usize>,
    env: &Env,
    engine: Option<&str>,
) -> Result<ThreadChoice, EnvError> {
    let said = |threads, why: String| ThreadChoice {
        threads,
        why,
        stated: true,
    };
    if let Some(t) = flag {
        return Ok(said(t, "--threads".into()));
    }
    if let Some(t) = planned {
        return Ok(said(t, "the plan".into()));
    }
    let mut vars: Vec<&'static str> = TASK_CPU_VARS.to_vec();
    // torchrun sets OMP_NUM_THREADS (to 1 unless the user chose) for its workers' threads.
    if engine == Some("torchrun") {
        vars.push("OMP_NUM_THREADS");
    }
    for var in vars {
        if let Some(v) = env(var) {
            let n = v.trim().parse::<usize>().ok().filter(|n| *n > 0);
            let n = n.ok_or_else(|| EnvError {
                var,
                value: v.clone(),
                why: "not a positive number of cores".into(),
            })?;
            return Ok(said(n, format!("{var}={n}")));
        }
    }
    Ok(ThreadChoice {
        threads: 1,
        why: "one per rank unless the plan, --threads or the engine says".into(),
        stated: false,
    })
}

/// The cores a rank of `threads` threads is pinned to: all of `usable` when the process was
/// given exactly that many; else, when not started by an engine, this rank's slice of the
/// host's cores after the `before` threads of the host's earlier ranks, if the host's ranks
/// (`host_total` threads) fit; else none.
pub fn cores_for(
    usable: &[usize],
    threads: usize,
    before: usize,
    host_total: usize,
    engine: bool,
) -> Option<Vec<usize>> {
    if usable.len() == threads {
        return Some(usable.to_vec());
    }
    (!engine && host_total <= usable.len()).then(|| usable[before..before + threads].to_vec())
}

/// The CPUs this process may run on (its affinity mask: what taskset, cpusets, Slurm's
/// task/affinity or a Kubernetes static CPU manager allow), capped by a cgroup CPU quota.
pub fn usable_cores() -> Vec<usize> {
    let quota = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for this
    // thread (pid 0) and reads nothing else.
    let mask = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then(
            || {
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|c| libc::CPU_ISSET(*c, &set))
                    .collect::<Vec<_>>()
            },
        )
    };
    let mut cores = mask
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| (0..quota).collect());
    cores.truncate(quota.max(1));
    cores
}

/// Pins the calling thread to `core` (best effort: a refusal leaves it where the OS puts it).
pub fn pin_current(core: usize) -> bool {
    // SAFETY: as in `usable_cores`; sched_setaffinity(0) changes only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Makes the calling thread worker 0 of a global pool of `threads` compute threads, the
/// others pinned to `cores[1..]` when given. Call it once, before any tensor operation (the
/// pool is otherwise built lazily with every core, for every rank of the host).
pub fn start(threads: usize, cores: Option<&[usize]>) -> Result<(), String> {
    let cores: Option<Vec<usize>> = cores.map(<[usize]>::to_vec);
    let mut builder = rayon_core::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("compute-{i}"))
        .use_current_thread();
    if let Some(cores) = cores {
        builder = builder.start_handler(move |i| {
            if let Some(c) = cores.get(i) {
                pin_current(*c);
            }
        });
    }
    builder
        .build_global()
        .map_err(|e| format!("cannot start {threads} compute threads: {e}"))
}

/// "0-3" or "0,2,5" for a note.
pub fn describe(cores: &[usize]) -> String {
    let contiguous = cores.windows(2).all(|w| w[1] == w[0] + 1);
    match (cores.first(), cores.last()) {
        (Some(a), Some(b)) if contiguous && cores.len() > 1 => format!("{a}-{b}"),
        _ => cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Starts the rank's compute threads (below) and says what it chose; returns
/// the count and the core the rank's own thread is to be pinned to, if its cores are known.
pub(super) fn for_rank(
    opts: &RankOptions,
    job: &Job,
    k: usize,
    engine: Option<&str>,
) -> Result<(usize, Option<usize>)> {
    let place = &job.places[k];
    if job.topo.device(place).kind != brigade_partitioner::DeviceKind::Cpu {
        start(1, None).map_err(anyhow::Error::msg)?;
        return Ok((1, None));
    }
    let env = |v: &str| std::env::var(v).ok();
    let choice = choose(opts.threads, job.topo.threads_stated(place), &env, engine)
        .with_context(|| format!("stage {k}: cannot tell how many compute threads to use"))?;
    let usable = usable_cores();
    // The threads of this host's ranks before this one and in all, as the plan places them.
    let (mut before, mut total) = (0, 0);
    for (r, p) in job
        .places
        .iter()
        .enumerate()
        .filter(|(_, p)| p.host == place.host)
    {
        let t = if r == k {
            choice.threads
        } else {
            job.topo.threads(p)
        };
        before += if r < k { t } else { 0 };
        total += t;
    }
    // Ranks placed by an engine, a rendezvous or --peers may share a machine the plan does
    // not know of: pinned only when given exactly their cores.
    let placed_elsewhere = engine.is_some() || !opts.peers.is_empty() || opts.rendezvous.is_some();
    let cores = choice
        .stated
        .then(|| cores_for(&usable, choice.threads, before, total, placed_elsewhere))
        .flatten();
    start(choice.threads, cores.as_deref()).map_err(anyhow::Error::msg)?;
    if choice.stated {
        let pinned = match &cores {
            Some(c) => format!(", pinned to cores {}", describe(c)),
            None if choice.threads > usable.len() => format!(
                "; this process may use only {} core(s): its threads will share them",
                usable.len()
            ),
            None => String::new(),
        };
        crate::note!(
            "stage {k}: {} compute thread(s) ({}){pinned}",
            choice.threads,
            choice.why
        );
    }
    Ok((choice.threads, cores.map(|c| c[0])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_env::fake_env as env;

    /// (--threads, the plan's, variables, engine, threads chosen, the start of why).
    type Case<'a> = (
        Option<usize>,
        Option<usize>,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        usize,
        &'a str,
    );

    #[test]
    fn who_says_how_many() {
        let cases: &[Case] = &[
            (None, None, &[], None, 1, "one per rank"),
            (
                Some(3),
                Some(2),
                &[("SLURM_CPUS_PER_TASK", "4")],
                None,
                3,
                "--threads",
            ),
            (
                None,
                Some(2),
                &[("SLURM_CPUS_PER_TASK", "4")],
                None,
                2,
                "the plan",
            ),
            (
                None,
                None,
                &[("SLURM_CPUS_PER_TASK", "4")],
                Some("slurm"),
                4,
                "SLURM_CPUS_PER_TASK=4",
            ),
            (
                None,
                None,
                &[("BRIGADE_TASK_CPUS", "2")],
                None,
                2,
                "BRIGADE_TASK_CPUS=2",
            ),
            (
                None,
                None,
                &[("OMP_NUM_THREADS", "8")],
                None,
                1,
                "one per rank",
            ),
            (
                None,
                None,
                &[("OMP_NUM_THREADS", "8")],
                Some("torchrun"),
                8,
                "OMP_NUM_THREADS=8",
            ),
        ];
        for (flag, planned, vars, engine, want, why) in cases {
            let c = choose(*flag, *planned, &env(vars), *engine).unwrap();
            assert_eq!(c.threads, *want, "{vars:?}");
            assert!(c.why.starts_with(why), "{} vs {why}", c.why);
            assert_eq!(c.stated, *want != 1 || flag.is_some() || planned.is_some());
        }
    }

    #[test]
    fn a_bad_variable_is_named() {
        for v in ["0", "two", "-1"] {
            let e = choose(None, None, &env(&[("SLURM_CPUS_PER_TASK", v)]), None).unwrap_err();
            assert_eq!(e.var, "SLURM_CPUS_PER_TASK");
        }
    }

    #[test]
    fn cores_are_sliced_only_when_known() {
        let all: Vec<usize> = (0..8).collect();
        // Given exactly its cores (a Slurm task with -c 2 under task/affinity).
        assert_eq!(cores_for(&[4, 5], 2, 0, 2, true), Some(vec![4, 5]));
        // The host's third rank of three with 2 threads each.
        assert_eq!(cores_for(&all, 2, 4, 6, false), Some(vec![4, 5]));
        // The host's ranks ask for more than it has: not pinned.
        assert_eq!(cores_for(&all, 4, 4, 12, false), None);
        // An engine's task that may share the node: not pinned.
        assert_eq!(cores_for(&all, 2, 0, 2, true), None);
        assert_eq!(describe(&[0, 1, 2, 3]), "0-3");
        assert_eq!(describe(&[0, 2]), "0,2");
    }

    #[test]
    fn usable_cores_are_some() {
        assert!(!usable_cores().is_empty());
    }
}
