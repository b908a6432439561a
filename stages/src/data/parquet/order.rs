//! The order samples are read in: a pure function of the row groups' sizes, the seed and the
//! shuffle buffer's size — never of the data, the split of the model or the rank — so every
//! rank and the reference see the same samples at the same (step, micro-batch).
//!
//! Epoch `e` visits the row groups in a permutation drawn from (seed, e) and passes their rows,
//! in file order, through a buffer of `cap` rows: once the buffer is over `cap`, a uniformly
//! drawn row leaves it; at the end of the epoch the buffer drains in random order. So an epoch
//! is a permutation of the rows, memory stays at `cap` rows plus one row group whatever the
//! file's size, and epochs run back to back (a batch may span two). `cap = 0` reads in file
//! order.
//!
//! Resuming at sample `k` replays the order on row *ids* only (no decoding) and then decodes
//! the row groups the buffer holds rows of ([`Stream::materialize`]).

use crate::init::{Stream as Purpose, rng};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};

/// A row's id: (row group, row within it).
pub type RowId = (usize, usize);

/// The sample stream, yielding items of type `T` (row ids, or decoded rows).
pub struct Stream<T> {
    /// Rows per row group.
    rows: Vec<usize>,
    seed: u64,
    cap: usize,
    epoch: u64,
    rng: ChaCha8Rng,
    /// This epoch's row-group order and the next position in it.
    order: Vec<usize>,
    pos: usize,
    /// The rows of the row group being passed into the buffer, not yet passed.
    pending: VecDeque<T>,
    buffer: Vec<T>,
}

impl<T> Stream<T> {
    /// The stream at the start of epoch `epoch`.
    pub fn new(rows: Vec<usize>, seed: u64, cap: usize, epoch: u64) -> Self {
        let mut s = Stream {
            rows,
            seed,
            cap,
            epoch,
            rng: rng(Purpose::Shuffle, &[seed, epoch]),
            order: Vec::new(),
            pos: 0,
            pending: VecDeque::new(),
            buffer: Vec::new(),
        };
        s.start_epoch(epoch);
        s
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.rng = rng(Purpose::Shuffle, &[self.seed, epoch]);
        self.order = (0..self.rows.len()).collect();
        if self.cap > 0 {
            self.order.shuffle(&mut self.rng);
        }
        self.pos = 0;
    }

    /// Rows per epoch.
    pub fn epoch_rows(&self) -> u64 {
        self.rows.iter().map(|&r| r as u64).sum()
    }

    /// The next sample; `load(g)` gives row group `g`'s rows when the stream reaches it.
    pub fn next<E>(&mut self, load: &mut impl FnMut(usize) -> Result<Vec<T>, E>) -> Result<T, E> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                self.buffer.push(item);
                if self.buffer.len() > self.cap {
                    return Ok(self.pop());
                }
                continue;
            }
            if self.pos < self.order.len() {
                let g = self.order[self.pos];
                self.pos += 1;
                self.pending = load(g)?.into();
                continue;
            }
            if !self.buffer.is_empty() {
                return Ok(self.pop());
            }
            assert!(
                self.epoch_rows() > 0,
                "an empty dataset is refused when opened"
            );
            self.start_epoch(self.epoch + 1);
        }
    }

    fn pop(&mut self) -> T {
        let i = self.rng.random_range(0..self.buffer.len());
        self.buffer.swap_remove(i)
    }
}

impl Stream<RowId> {
    /// The id stream positioned after its first `skip` samples.
    pub fn skipped(rows: Vec<usize>, seed: u64, cap: usize, skip: u64) -> Self {
        let per_epoch: u64 = rows.iter().map(|&r| r as u64).sum::<u64>().max(1);
        // Epochs start fresh (the buffer drains at each end): whole ones are skipped for free.
        let mut s = Stream::new(rows.clone(), seed, cap, skip / per_epoch);
        let mut load = |g: usize| Ok::<_, ()>((0..rows[g]).map(|r| (g, r)).collect());
        for _ in 0..skip % per_epoch {
            let _ = s.next(&mut load);
        }
        s
    }

    /// The same stream over decoded rows: `load(g)` decodes row group `g`, once for each row
    /// group the buffer or the current group still holds rows of.
    pub fn materialize<U, E>(
        self,
        load: &mut impl FnMut(usize) -> Result<Vec<U>, E>,
    ) -> Result<Stream<U>, E> {
        let mut groups: HashMap<usize, Vec<Option<U>>> = HashMap::new();
        for &(g, _) in self.buffer.iter().chain(self.pending.iter()) {
            if let std::collections::hash_map::Entry::Vacant(e) = groups.entry(g) {
                e.insert(load(g)?.into_iter().map(Some).collect());
            }
        }
        let mut take = |(g, r): RowId| {
            groups
                .get_mut(&g)
                .and_then(|v| v[r].take())
                .expect("each row is taken once")
        };
        let buffer = self.buffer.into_iter().map(&mut take).collect();
        let pending = self.pending.into_iter().map(&mut take).collect();
        Ok(Stream {
            rows: self.rows,
            seed: self.seed,
            cap: self.cap,
            epoch: self.epoch,
            rng: self.rng,
            order: self.order,
            pos: self.pos,
            pending,
            buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[usize]) -> impl FnMut(usize) -> Result<Vec<RowId>, ()> + '_ {
        move |g| Ok((0..rows[g]).map(|r| (g, r)).collect())
    }

    fn take(s: &mut Stream<RowId>, n: usize, rows: &[usize]) -> Vec<RowId> {
        let mut load = ids(rows);
        (0..n).map(|_| s.next(&mut load).unwrap()).collect()
    }

    #[test]
    fn an_epoch_is_a_permutation_and_epochs_differ() {
        let rows = vec![5, 3, 7, 1];
        let mut s = Stream::new(rows.clone(), 9, 4, 0);
        let e0 = take(&mut s, 16, &rows);
        let e1 = take(&mut s, 16, &rows);
        for e in [&e0, &e1] {
            let mut sorted = e.clone();
            sorted.sort();
            let all: Vec<RowId> = (0..4)
                .flat_map(|g| (0..rows[g]).map(move |r| (g, r)))
                .collect();
            assert_eq!(sorted, all);
        }
        assert_ne!(e0, e1);
        assert_ne!(e0, {
            let mut v = e0.clone();
            v.sort();
            v
        });
    }

    #[test]
    fn no_buffer_reads_in_file_order() {
        let rows = vec![2, 2];
        let mut s = Stream::new(rows.clone(), 9, 0, 0);
        assert_eq!(
            take(&mut s, 6, &rows),
            vec![(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (0, 1)]
        );
    }

    #[test]
    fn the_buffer_bounds_how_far_a_row_moves() {
        // A row can leave no earlier than its position minus the buffer's size.
        let rows = vec![10; 20];
        let mut s = Stream::new(rows.clone(), 3, 8, 0);
        let order = take(&mut s, 200, &rows);
        let mut passed = HashMap::new();
        let mut k = 0;
        for g in &s.order {
            for r in 0..rows[*g] {
                passed.insert((*g, r), k);
                k += 1;
            }
        }
        for (i, id) in order.iter().enumerate() {
            assert!(passed[id] <= i + 8, "{id:?} left before it entered");
        }
    }

    #[test]
    fn skipping_then_materializing_continues_the_same_stream() {
        let rows = vec![6, 4, 9, 3, 5];
        let total: usize = rows.iter().sum();
        for cap in [0, 1, 7, 100] {
            for skip in [
                0,
                1,
                5,
                total as u64 - 1,
                total as u64,
                2 * total as u64 + 3,
            ] {
                let mut full = Stream::new(rows.clone(), 11, cap, 0);
                let all = take(&mut full, skip as usize + 40, &rows);
                let skipped = Stream::skipped(rows.clone(), 11, cap, skip);
                // Decoded rows: here the row id itself, loaded by group.
                let mut loads = 0;
                let mut s = skipped
                    .materialize(&mut |g| {
                        loads += 1;
                        Ok::<_, ()>((0..rows[g]).map(|r| (g, r)).collect::<Vec<RowId>>())
                    })
                    .unwrap();
                assert!(loads <= rows.len());
                let rest = take(&mut s, 40, &rows);
                assert_eq!(rest, all[skip as usize..], "cap {cap} skip {skip}");
            }
        }
    }
}
