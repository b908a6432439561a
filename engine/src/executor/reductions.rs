//! The driver's side of the all-reduces: it hands each reduction to the transport, which runs
//! it ([`crate::transport::reducer`], summed on this thread whenever the driver asks the
//! transport for what arrived; decision 0023), and routes what comes back: a gradient bucket's sum to the executor, the
//! norm's or the tie's to the driver, which waits for it.

use super::core::Executor;
use super::driver::DriveError;
use crate::message::{Arrived, ReduceJob};
use crate::transport::Transport;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A reduction: its edge and bucket.
pub(super) type Key = (u32, u32);

/// What a finished reduction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A gradient bucket: the sum goes to [`Executor::bucket_reduced`].
    Bucket,
    /// The norm's or the tie's ring: the driver waits for it.
    Blocking,
}

#[derive(Default)]
pub(super) struct Reductions {
    /// Blocking reductions in flight.
    blocking: HashSet<Key>,
    /// Finished blocking reductions.
    done: HashMap<Key, Vec<f32>>,
}

impl Reductions {
    /// Hands `job` to the transport.
    pub(super) fn start(
        &mut self,
        transport: &mut impl Transport,
        exec: &Executor,
        job: ReduceJob,
        owner: Owner,
    ) -> Result<(), DriveError> {
        let (key, first_bucket) = ((job.edge, job.bucket), job.bucket == 0);
        if owner == Owner::Blocking {
            self.blocking.insert(key);
        }
        transport.reduce(job)?;
        if owner == Owner::Bucket && first_bucket {
            crate::failpoint::reduce_started(exec.rank(), exec.step());
        }
        Ok(())
    }

    /// Takes what arrives (waiting up to `timeout` for the first) and everything else
    /// already here.
    pub(super) fn pump(
        &mut self,
        transport: &mut impl Transport,
        exec: &mut Executor,
        timeout: Duration,
    ) -> Result<(), DriveError> {
        if let Some(got) = transport.recv(timeout)? {
            self.take(exec, got)?;
            // Take what else has arrived before computing again.
            while let Some(more) = transport.recv(Duration::ZERO)? {
                self.take(exec, more)?;
            }
        }
        Ok(())
    }

    fn take(&mut self, exec: &mut Executor, got: Arrived) -> Result<(), DriveError> {
        match got {
            Arrived::Message(msg) => exec.deliver(*msg)?,
            Arrived::Reduced(r) => {
                let key = (r.edge, r.bucket);
                if self.blocking.remove(&key) {
                    self.done.insert(key, r.sum.into_vec());
                } else {
                    exec.bucket_reduced(r.edge, r.bucket, r.sum)?;
                }
            }
        }
        Ok(())
    }

    /// The sum of blocking reduction `key`, once finished.
    pub(super) fn take_done(&mut self, key: Key) -> Option<Vec<f32>> {
        self.done.remove(&key)
    }
}
