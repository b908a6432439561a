//! Failure injection for the tests that must kill a rank at one exact moment (a random kill
//! lands mostly in compute): `BRIGADE_FAILPOINT=allreduce:RANK:STEP` makes rank RANK kill
//! itself right after handing step STEP's first gradient bucket to its transport (whose I/O
//! thread may have sent its first segment or not: the replicas wait for it either way), and with
//! `BRIGADE_FAILPOINT_ONCE=FILE` only while FILE does not exist (it is created first, so a
//! restarted rank runs on). Unset, it costs one environment read per process.

use std::sync::OnceLock;

/// Where the failure is planted: (rank, step).
fn planted() -> Option<(usize, u64)> {
    static AT: OnceLock<Option<(usize, u64)>> = OnceLock::new();
    *AT.get_or_init(|| {
        let v = std::env::var("BRIGADE_FAILPOINT").ok()?;
        let mut parts = v.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("allreduce"), Some(rank), Some(step)) => {
                Some((rank.parse().ok()?, step.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Rank `rank` has handed step `step`'s first gradient bucket to its transport.
pub fn reduce_started(rank: usize, step: u64) {
    if planted() != Some((rank, step)) {
        return;
    }
    if let Ok(mark) = std::env::var("BRIGADE_FAILPOINT_ONCE")
        && (std::path::Path::new(&mark).exists() || std::fs::write(&mark, b"fired\n").is_err())
    {
        return;
    }
    eprintln!("rank {rank}: BRIGADE_FAILPOINT fired in step {step}'s all-reduce");
    // SAFETY: signalling this process itself; SIGKILL, as a crash or the OOM killer would.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}
