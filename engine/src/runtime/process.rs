//! The rank as an operating-system process: tied to its launcher's life, a pid file while it
//! runs, its peak memory at the end.

/// Removes a file when the rank ends, however it ends (short of being killed).
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asks the kernel to kill this process when its parent dies, so a killed launcher leaves no
/// orphans; exits at once if the launcher is already gone.
pub fn die_with_launcher(launcher: u32) {
    #[cfg(target_os = "linux")]
    unsafe {
        // SAFETY: prctl with PR_SET_PDEATHSIG only changes this process's own signal disposition.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if std::os::unix::process::parent_id() != launcher {
        crate::note!("error: the launcher (pid {launcher}) has already exited");
        std::process::exit(1);
    }
}

/// This process's peak resident set size (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
