//! SIGINT and SIGTERM while a tracked run trains: the run ends KILLED on the server, then the
//! signal takes its usual course (the process dies of it; its ranks follow, as they watch
//! their launcher).

use super::TrackerHandle;
use super::mlflow::Status;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// The signal that asked this process to stop, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The name of a stop signal, for the run's `brigade.failure` tag.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Catches SIGINT and SIGTERM; a thread ends the run KILLED (waiting at most 5 s for the
/// server), then lets the signal kill the process.
pub fn watch(handle: TrackerHandle) {
    let f = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, f as libc::sighandler_t);
        libc::signal(libc::SIGTERM, f as libc::sighandler_t);
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(sig) = received() {
                    handle.tag("brigade.failure", &format!("stopped by {}", name(sig)));
                    handle.end(Status::Killed, Duration::from_secs(5));
                    // SAFETY: restoring the default disposition, then dying of the signal.
                    unsafe {
                        libc::signal(sig, libc::SIG_DFL);
                        libc::raise(sig);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        crate::note!(
            "warning: cannot watch for SIGINT/SIGTERM ({e}): a stopped run stays RUNNING in MLflow"
        );
    }
}
