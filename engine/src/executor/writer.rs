//! Writes checkpoints on a thread of their own, so that files and fsyncs do not hold up the
//! compute thread. At most one checkpoint waits while another is written: a disk slower than
//! training slows training instead of filling memory.

use brigade_stages::checkpoint::Snapshot;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

type Job = (u64, Vec<Snapshot>);

pub struct CheckpointWriter {
    tx: Option<Sender<Job>>,
    errors: Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// Starts the writer for checkpoints under `root`; `written(step, dir)` runs after each.
    pub fn start(root: PathBuf, written: impl Fn(u64, &Path) + Send + 'static) -> Self {
        let (tx, rx) = bounded::<Job>(1);
        let (err_tx, errors) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                for (step, snapshots) in rx {
                    let mut dir = None;
                    for s in &snapshots {
                        match s.write(&root) {
                            Ok(d) => dir = Some(d),
                            Err(e) => {
                                // A full disk is the usual cause: say what to do, and that
                                // nothing older was touched (the torn checkpoint has no
                                // manifest, so resume skips it).
                                let full = e.to_string().contains("os error 28");
                                let hint = if full {
                                    ". Free space there or give --checkpoint-dir on a larger disk, then --resume: the newest complete checkpoint is intact"
                                } else {
                                    ""
                                };
                                let _ = err_tx.send(format!(
                                    "cannot write the checkpoint of step {step}: {e}{hint}"
                                ));
                                return;
                            }
                        }
                    }
                    if let Some(d) = dir {
                        written(step, &d);
                    }
                }
            })
            .expect("a thread can be started");
        CheckpointWriter {
            tx: Some(tx),
            errors,
            thread: Some(thread),
        }
    }

    /// Queues a checkpoint; an earlier write's failure is returned here.
    pub fn submit(&mut self, step: u64, snapshots: Vec<Snapshot>) -> Result<(), String> {
        if let Ok(e) = self.errors.try_recv() {
            return Err(e);
        }
        let tx = self.tx.as_ref().expect("submit before finish");
        if tx.send((step, snapshots)).is_err() {
            // The writer stopped after a failure: report it.
            return Err(self
                .errors
                .recv()
                .unwrap_or_else(|_| "the checkpoint writer stopped".into()));
        }
        Ok(())
    }

    /// Waits until every queued checkpoint is written.
    pub fn finish(mut self) -> Result<(), String> {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            return Err("the checkpoint writer failed unexpectedly (see the message above); checkpoints after the last one reported may be missing".into());
        }
        match self.errors.try_recv() {
            Ok(e) => Err(e),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        // Finish what was queued even when the caller bails out early: no lost work.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
