//! Synthetic samples made ahead on helper threads.
//!
//! A synthetic micro-batch is a pure function of (step, micro-batch), and making one costs real
//! host time: at batch 4096, mlp-8x1024's targets are ~134 M multiply-adds through the teacher.
//! On the compute thread that time adds to every step, and on a GPU it is time the device waits
//! for. So a helper thread per lane (inputs, targets) makes the next micro-batches in the order
//! the executor asks for them, one step ahead at most, and the compute thread only uploads
//! them. The values are the same as made inline (same function, same arguments), so nothing
//! downstream changes; a request out of that order (a resumed run, another pattern) restarts
//! the lane there. A replica's lanes make only its own share of each step's micro-batches.

use super::synthetic::{HostAct, HostTarget};
use super::{Batches, DataError, Share, SyntheticData};
use crate::act::Act;
use crate::loss::Target;
use burn::prelude::Device;
use crossbeam_channel::{Receiver, bounded};
use std::sync::Arc;

/// [`SyntheticData`] with its inputs and targets made ahead on two helper threads.
pub struct Prefetched {
    data: Arc<SyntheticData>,
    microbatches: u64,
    /// The micro-batches of each step this rank reads: the lanes' keys count only those.
    share: Share,
    inputs: Lane<HostAct>,
    targets: Lane<HostTarget>,
}

impl Prefetched {
    /// Makes up to a step's share of micro-batches (at least 2, at most 16) ahead per lane.
    pub fn new(data: SyntheticData, microbatches: usize, share: Share) -> Self {
        let microbatches = microbatches.max(1) as u64;
        let depth = (share.range(microbatches).1 as usize).clamp(2, 16);
        Prefetched {
            data: Arc::new(data),
            microbatches,
            share,
            inputs: Lane::new(depth),
            targets: Lane::new(depth),
        }
    }

    /// The lane key of (step, mb) and the function from keys back to (step, mb); `None` for a
    /// micro-batch outside the share (made inline: no lane pattern covers it).
    fn key(
        &self,
        step: u64,
        mb: u64,
    ) -> Option<(u64, impl Fn(u64) -> (u64, u64) + Send + 'static)> {
        let (first, count) = self.share.range(self.microbatches);
        let at = self.share.position(mb, self.microbatches)?;
        Some((step * count + at, move |k| (k / count, first + k % count)))
    }

    fn host_inputs(&mut self, step: u64, mb: u64) -> HostAct {
        let at = self.key(step, mb);
        ahead(
            &mut self.inputs,
            &self.data,
            at,
            (step, mb),
            SyntheticData::host_inputs,
        )
    }

    fn host_targets(&mut self, step: u64, mb: u64) -> HostTarget {
        let at = self.key(step, mb);
        ahead(
            &mut self.targets,
            &self.data,
            at,
            (step, mb),
            SyntheticData::host_targets,
        )
    }
}

/// `make(data, step, mb)` from `lane` at lane key `at` (with the way from keys back to
/// (step, mb)), or made inline where no key covers it.
fn ahead<T: Send + 'static>(
    lane: &mut Lane<T>,
    data: &Arc<SyntheticData>,
    at: Option<(u64, impl Fn(u64) -> (u64, u64) + Send + 'static)>,
    (step, mb): (u64, u64),
    make: fn(&SyntheticData, u64, u64) -> T,
) -> T {
    let Some((key, back)) = at else {
        return make(data, step, mb);
    };
    let data = data.clone();
    lane.take(key, move |k| {
        let (s, m) = back(k);
        make(&data, s, m)
    })
}

impl Batches for Prefetched {
    fn inputs(&mut self, step: u64, mb: u64, device: &Device) -> Result<Act, DataError> {
        Ok(self.host_inputs(step, mb).upload(device))
    }

    fn targets(&mut self, step: u64, mb: u64, device: &Device) -> Result<Target, DataError> {
        Ok(self.host_targets(step, mb).upload(device))
    }
}

/// One helper thread making items for keys `from, from + 1, …` into a bounded channel; it
/// ends when the receiving side is dropped (a restart or the data's end).
struct Lane<T> {
    depth: usize,
    /// The channel and the key its next item has.
    feed: Option<(Receiver<(u64, T)>, u64)>,
    /// Helper threads started so far (a restart wastes the items made ahead).
    starts: usize,
}

impl<T: Send + 'static> Lane<T> {
    fn new(depth: usize) -> Self {
        Lane {
            depth,
            feed: None,
            starts: 0,
        }
    }

    /// The item for `key`: from the helper when it is the one it makes next, else (first
    /// call, or out of order) from a helper restarted at `key`.
    fn take(&mut self, key: u64, make: impl Fn(u64) -> T + Send + 'static) -> T {
        if !matches!(&self.feed, Some((_, next)) if *next == key) {
            let (tx, rx) = bounded(self.depth);
            std::thread::Builder::new()
                .name("brigade-data".into())
                .spawn(move || {
                    for k in key.. {
                        if tx.send((k, make(k))).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn the data helper thread");
            self.feed = Some((rx, key));
            self.starts += 1;
        }
        let (rx, next) = self.feed.as_mut().expect("the lane was just started");
        let (k, item) = rx
            .recv()
            .expect("the data helper thread ended while its lane was open");
        debug_assert_eq!(k, key);
        *next = key + 1;
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brigade_partitioner::Topology;

    fn topo(model: &str) -> Topology {
        let text = format!(
            "name = \"t\"\n[model]\n{model}\n[data]\nsource = \"synthetic\"\nseed = 4\n\
             [train]\nsteps = 3\nbatch = 8\nmicrobatches = 4\nlr = 0.1\n\
             [[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n"
        );
        brigade_partitioner::parse("t.toml", &text, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// In order, out of order and restarted, the made-ahead values equal the inline ones.
    #[test]
    fn prefetched_values_equal_inline_ones_in_any_order() {
        let features =
            "input = [6]\nlayers = [{ kind = \"linear\", out = 3 }]\nloss = \"cross_entropy\"";
        let tokens = "input = [5]\nlayers = [{ kind = \"embedding\", vocab = 7, dim = 4 }, \
                      { kind = \"linear\", out = 7 }]\nloss = \"cross_entropy\"";
        let mse = "input = [6]\nlayers = [{ kind = \"linear\", out = 2 }]\nloss = \"mse\"";
        for model in [features, tokens, mse] {
            let t = topo(model);
            let inline = SyntheticData::new(&t);
            let mut ahead = Prefetched::new(SyntheticData::new(&t), 4, Share::Whole);
            let order = [
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 3),
                (1, 0),
                (2, 3),
                (0, 0),
                (0, 1),
            ];
            for (step, mb) in order {
                let got = ahead.host_inputs(step, mb);
                assert_eq!(got, inline.host_inputs(step, mb), "inputs {step}/{mb}");
                let got = ahead.host_targets(step, mb);
                assert_eq!(got, inline.host_targets(step, mb), "targets {step}/{mb}");
            }
        }
    }

    /// A replica's lanes make its own micro-batches of each step, in order: one helper per
    /// lane over several steps (no restart per step), the same values as made inline, and a
    /// micro-batch outside the share still answered (inline).
    #[test]
    fn a_replicas_lanes_make_only_its_share_without_restarting() {
        let t = topo("input = [6]\nlayers = [{ kind = \"linear\", out = 3 }]\nloss = \"mse\"");
        let inline = SyntheticData::new(&t);
        let share = Share::Part { first: 2, count: 2 };
        let mut ahead = Prefetched::new(SyntheticData::new(&t), 4, share);
        for step in 0..3 {
            for mb in 2..4 {
                assert_eq!(ahead.host_inputs(step, mb), inline.host_inputs(step, mb));
                assert_eq!(ahead.host_targets(step, mb), inline.host_targets(step, mb));
            }
        }
        assert_eq!((ahead.inputs.starts, ahead.targets.starts), (1, 1));
        assert_eq!(ahead.host_inputs(3, 0), inline.host_inputs(3, 0));
        assert_eq!(ahead.host_inputs(3, 2), inline.host_inputs(3, 2));
        assert_eq!(
            ahead.inputs.starts, 1,
            "an inline answer leaves the lane as it was"
        );
    }
}
