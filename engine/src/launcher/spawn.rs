//! Starting ranks: the [`Spawner`] interface a supervisor starts its ranks through, and
//! [`LocalSpawner`], which runs each as a child process of this one (`brigade stage …`).

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// What a started rank tells its supervisor: each line of its stdout (`StageEvent`s), then
/// its exit. A rank's last line is always sent before its exit.
pub enum Event {
    Line(usize, String),
    Exit(usize, std::io::Result<ExitStatus>),
}

/// The last lines a rank wrote to stderr (what it said before it died).
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// A started rank.
pub struct Spawned {
    pub pid: u32,
    pub stderr_tail: StderrTail,
}

/// Starts ranks as processes running `brigade stage ARGS`.
pub trait Spawner {
    /// Starts rank `k`; its [`Event`]s go to `events`.
    fn spawn(&mut self, k: usize, args: &[OsString], events: Sender<Event>) -> Result<Spawned>;
    /// Stops a started rank at once (it may already have exited).
    fn kill(&self, rank: &Spawned);
}

/// Ranks as child processes of this one, dying with it (`--launcher-pid`).
pub struct LocalSpawner {
    exe: std::path::PathBuf,
}

impl LocalSpawner {
    /// Runs this very executable (`brigade`, or a benchmark that forwards `stage` to it).
    pub fn new() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the brigade executable")?;
        Ok(LocalSpawner { exe })
    }
}

impl Spawner for LocalSpawner {
    fn spawn(&mut self, k: usize, args: &[OsString], events: Sender<Event>) -> Result<Spawned> {
        let mut child = Command::new(&self.exe)
            .arg("stage")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let tail: StderrTail = Arc::new(Mutex::new(VecDeque::new()));
        forward_stderr(k, &mut child, tail.clone());
        let pid = child.id();
        // Events first, then the exit: a stage's last event is never read after its exit.
        std::thread::spawn(move || {
            if let Some(out) = child.stdout.take() {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = events.send(Event::Line(k, line));
                }
            }
            let status = child.wait();
            let _ = events.send(Event::Exit(k, status));
        });
        Ok(Spawned {
            pid,
            stderr_tail: tail,
        })
    }

    fn kill(&self, rank: &Spawned) {
        // SAFETY: kill(2) on a child we started and have not reaped; at worst it is already dead.
        unsafe {
            libc::kill(rank.pid as i32, libc::SIGKILL);
        }
    }
}

/// Copies a child's stderr into ours, prefixed with its stage, keeping the last lines.
fn forward_stderr(k: usize, child: &mut Child, tail: StderrTail) {
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                crate::note!("[stage {k}] {line}");
                let mut t = tail.lock().expect("tail lock");
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
}
