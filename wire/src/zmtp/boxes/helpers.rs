//! Helper threads for CURVE's boxes: a long frame's Salsa20 XOR is cut into block-aligned
//! segments that the link's own thread and the helpers run at once (the key stream of each
//! segment starts at its own block counter, so the wire does not change). Poly1305 stays one
//! pass on the link's thread, and frames still go out in nonce order: only the work inside one
//! box is spread.
//!
//! How many: `BRIGADE_CURVE_THREADS` if set; otherwise the cores a host's ranks leave idle,
//! shared among them ([`idle_cores`]): each rank computes on one thread and moves bytes on
//! another, so `(cores − 2 × ranks) / ranks`, at most 3. A rank sets it from its plan (how many
//! ranks its host runs, the host's `threads`); any other process assumes one rank. On a 2-core
//! machine that is none: boxes are sealed and opened on the link's thread.

use std::sync::OnceLock;

/// Segments shorter than this are not worth a hand-off to another thread (~10 µs).
const MIN_SEGMENT: usize = 256 << 10;
/// The most helpers the default picks: Poly1305's serial pass bounds the gain beyond that.
const MAX_DEFAULT: usize = 3;
/// The environment variable that sets the number of helper threads.
pub const ENV: &str = "BRIGADE_CURVE_THREADS";

/// A pool of helper threads (possibly none).
pub struct Helpers {
    pool: Option<rayon_core::ThreadPool>,
    threads: usize,
}

impl Helpers {
    /// `threads` helpers beside the caller's thread; 0 runs everything on the caller's.
    pub fn new(threads: usize) -> Helpers {
        let pool = (threads > 0)
            .then(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("brigade-curve-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        let threads = if pool.is_some() { threads } else { 0 };
        Helpers { pool, threads }
    }

    /// The number of helper threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(start, len)` on disjoint ranges covering `0..n`, each starting at a multiple of
    /// 64 (a Salsa20 block), on the caller's thread and the helpers; returns when all are done.
    pub fn segments(&self, n: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let parts = (self.threads + 1).min(n / MIN_SEGMENT).max(1);
        match &self.pool {
            Some(pool) if parts > 1 => {
                let per = n.div_ceil(parts).next_multiple_of(64);
                pool.in_place_scope(|s| {
                    for start in (per..n).step_by(per) {
                        s.spawn(move |_| f(start, per.min(n - start)));
                    }
                    f(0, per.min(n));
                });
            }
            _ if n > 0 => f(0, n),
            _ => {}
        }
    }
}

/// Helpers per rank when `ranks` ranks share `cores` cores, each busy on two threads
/// (compute, and the link I/O that seals and opens boxes).
pub fn idle_cores(cores: usize, ranks: usize) -> usize {
    let ranks = ranks.max(1);
    (cores.saturating_sub(2 * ranks) / ranks).min(MAX_DEFAULT)
}

/// [`ENV`], if set to a number.
pub fn from_env() -> Option<usize> {
    std::env::var(ENV).ok().and_then(|v| v.trim().parse().ok())
}

/// The default number of helpers: [`ENV`] if set, else the cores one rank leaves idle.
pub fn default_threads() -> usize {
    from_env().unwrap_or_else(|| {
        idle_cores(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            1,
        )
    })
}

static HELPERS: OnceLock<Helpers> = OnceLock::new();

/// The process's helpers, made on first use with [`default_threads`].
pub fn helpers() -> &'static Helpers {
    HELPERS.get_or_init(|| Helpers::new(default_threads()))
}

/// Sets the process's number of helpers before first use; false if they already exist.
pub fn set_helpers(threads: usize) -> bool {
    HELPERS.set(Helpers::new(threads)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn covered(h: &Helpers, n: usize) -> Vec<(usize, usize)> {
        let seen = Mutex::new(Vec::new());
        h.segments(n, &|s, l| seen.lock().unwrap().push((s, l)));
        let mut v = seen.into_inner().unwrap();
        v.sort();
        v
    }

    #[test]
    fn helpers_take_the_cores_the_ranks_leave_idle() {
        for (cores, ranks, helpers) in [
            (2, 1, 0),
            (2, 2, 0),
            (4, 1, 2),
            (16, 1, 3),
            (16, 4, 2),
            (16, 8, 0),
            (8, 3, 0),
            (1, 0, 0),
        ] {
            assert_eq!(
                idle_cores(cores, ranks),
                helpers,
                "{cores} cores, {ranks} ranks"
            );
        }
    }

    #[test]
    fn segments_are_block_aligned_disjoint_and_cover_everything() {
        let h = Helpers::new(3);
        assert_eq!(h.threads(), 3);
        for n in [
            0,
            1,
            63,
            MIN_SEGMENT,
            2 * MIN_SEGMENT + 5,
            (4 << 20) - 31,
            32 << 20,
        ] {
            let v = covered(&h, n);
            let mut next = 0;
            for &(s, l) in &v {
                assert_eq!(s, next, "n = {n}: {v:?}");
                assert_eq!(s % 64, 0);
                assert!(l > 0);
                next = s + l;
            }
            assert_eq!(next, n, "n = {n}: {v:?}");
        }
        assert_eq!(covered(&h, 4 << 20).len(), 4, "big frames use every helper");
        assert_eq!(
            covered(&h, 100_000).len(),
            1,
            "small ones stay on one thread"
        );
        assert_eq!(covered(&Helpers::new(0), 32 << 20), vec![(0, 32 << 20)]);
    }
}
