//! Cutting a chain of layers into contiguous pipeline stages.
//!
//! Stage `k` running layers `a..b` on its device costs
//! `work(a..b) / speed_k + send_next_k(cut[b]) + send_prev_k(cut[a])` per micro-batch — its
//! compute plus what it must push out (activations forward, gradients backward) — and must fit
//! `params(a..b) · (1 + optimizer copies) + live_k · saved(a..b)` in its memory (with
//! recomputation `live_k · cut(a) + saved(a..b)`: only the stage input is kept), where `live_k`
//! is how many micro-batches the schedule keeps alive on it. The pipeline's throughput is set by
//! its slowest stage, so `auto` minimises the bottleneck `max_k cost_k`.

use serde::Serialize;

/// One stage's device as the algorithm sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSlot {
    /// GFLOP/s.
    pub speed_gflops: f64,
    /// Bytes available, if limited.
    pub memory_bytes: Option<u64>,
    /// Micro-batches whose saved activations are alive at once on this stage.
    pub live_microbatches: u64,
    /// Multiplier on parameter bytes for gradients and optimizer state (1 + copies).
    pub param_factor: u64,
    /// (ms per byte, fixed ms) to send to the next stage; the fixed part applies when bytes > 0.
    pub send_next: (f64, f64),
    /// (ms per byte, fixed ms) to send to the previous stage.
    pub send_prev: (f64, f64),
    /// Activation recomputation: the stage keeps only its input per live micro-batch, plus one
    /// micro-batch's saved activations while it recomputes, and runs its forward twice.
    pub recompute: bool,
}

/// A partitioning problem: a chain of layers and one slot per stage, in pipeline order.
#[derive(Debug, Clone)]
pub struct Problem {
    /// fwd + bwd work per layer for one micro-batch (GFLOP).
    pub work: Vec<f64>,
    pub param_bytes: Vec<u64>,
    pub saved_bytes: Vec<u64>,
    /// Bytes crossing the cut before layer c, len n + 1.
    pub cut_bytes: Vec<u64>,
    pub slots: Vec<StageSlot>,
    /// Per layer, the work a recomputing stage runs a second time at backward (its forward).
    pub recompute_work: Vec<f64>,
    /// Skip connections: which tensors leave and enter a stage (None: a chain, `cut_bytes`).
    pub graph: Option<GraphCuts>,
    /// `train.batch_weight_grads`: what each layer keeps per micro-batch until the step's end
    /// (a linear layer's input and output gradient), and for how many micro-batches.
    pub deferred: Option<DeferredW>,
}

/// Memory that weight gradients batched over a step hold: every micro-batch's, not only the
/// live ones'.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredW {
    /// Bytes per micro-batch, per layer.
    pub bytes: Vec<u64>,
    /// Micro-batches per step (of one replica).
    pub microbatches: u64,
}

impl DeferredW {
    fn bytes(&self, a: usize, b: usize) -> u64 {
        self.bytes[a..b]
            .iter()
            .fold(0u64, |acc, &x| acc.saturating_add(x))
            .saturating_mul(self.microbatches)
    }
}

/// A layer graph's tensors as the partitioner sees them. A stage holding layers `a..b` sends
/// each tensor it makes that a later stage takes once (however many later layers take it) and
/// receives each earlier tensor its layers take once; gradients go back the same ways.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphCuts {
    /// Bytes of layer i's output, one micro-batch.
    pub bytes: Vec<u64>,
    /// The layers whose outputs layer i takes (empty for the first: the model input).
    pub sources: Vec<Vec<usize>>,
    /// The last layer taking layer i's output (i itself when none: the model output).
    pub last_use: Vec<usize>,
}

impl GraphCuts {
    pub fn new(bytes: Vec<u64>, sources: Vec<Vec<usize>>) -> GraphCuts {
        let mut last_use: Vec<usize> = (0..bytes.len()).collect();
        for (l, ins) in sources.iter().enumerate() {
            for &t in ins {
                last_use[t] = last_use[t].max(l);
            }
        }
        GraphCuts {
            bytes,
            sources,
            last_use,
        }
    }

    /// Bytes a stage holding `a..b` sends on (tensors made in it and taken after it).
    pub fn out_bytes(&self, a: usize, b: usize) -> u64 {
        (a..b)
            .filter(|&t| self.last_use[t] >= b)
            .map(|t| self.bytes[t])
            .sum()
    }

    /// Bytes a stage holding `a..b` receives (tensors made before it and taken in it).
    pub fn in_bytes(&self, a: usize, b: usize) -> u64 {
        let mut seen: Vec<usize> = Vec::new();
        for l in a..b {
            for &t in &self.sources[l] {
                if t < a && !seen.contains(&t) {
                    seen.push(t);
                }
            }
        }
        seen.iter().map(|&t| self.bytes[t]).sum()
    }
}

/// Why no partition exists.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    #[error(
        "no split of {layers} layers into {stages} stages fits the devices' memory (the smallest possible stage {stage} still needs {needed} bytes, it has {available})"
    )]
    DoesNotFit {
        layers: usize,
        stages: usize,
        stage: usize,
        needed: u64,
        available: u64,
    },
    /// Every stage could hold some layer alone, but no contiguous split fits them all.
    #[error(
        "no split of {layers} layers into {stages} stages fits the devices' memory (each stage can hold a layer alone, but together the model needs more than the {available} bytes the devices have; on one device it needs {needed} bytes)"
    )]
    DoesNotFitTogether {
        layers: usize,
        stages: usize,
        needed: u64,
        available: u64,
    },
    #[error("cannot split {layers} layers into {stages} non-empty stages")]
    TooManyStages { layers: usize, stages: usize },
}

/// Stage boundaries: stage k holds layers `bounds[k]..bounds[k + 1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Split(pub Vec<usize>);

impl Split {
    /// From layer counts per stage.
    pub fn from_counts(counts: &[usize]) -> Split {
        let mut b = vec![0];
        for c in counts {
            b.push(b.last().unwrap() + c);
        }
        Split(b)
    }

    pub fn stages(&self) -> usize {
        self.0.len() - 1
    }

    pub fn range(&self, k: usize) -> std::ops::Range<usize> {
        self.0[k]..self.0[k + 1]
    }

    pub fn counts(&self) -> Vec<usize> {
        self.0.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Prefix sums so a stage's totals are O(1).
struct Prefix {
    work: Vec<f64>,
    rework: Vec<f64>,
    params: Vec<u64>,
    saved: Vec<u64>,
}

impl Prefix {
    fn new(p: &Problem) -> Prefix {
        fn scan<T: Copy>(xs: &[T], zero: T, add: impl Fn(T, T) -> T) -> Vec<T> {
            std::iter::once(zero)
                .chain(xs.iter().scan(zero, |acc, &x| {
                    *acc = add(*acc, x);
                    Some(*acc)
                }))
                .collect()
        }
        Prefix {
            work: scan(&p.work, 0.0, |a, b| a + b),
            rework: scan(&p.recompute_work, 0.0, |a, b| a + b),
            params: scan(&p.param_bytes, 0, u64::saturating_add),
            saved: scan(&p.saved_bytes, 0, u64::saturating_add),
        }
    }
}

fn send_ms((per_byte, fixed): (f64, f64), bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        fixed + per_byte * bytes as f64
    }
}

impl Problem {
    pub fn layers(&self) -> usize {
        self.work.len()
    }

    /// Compute ms of layers a..b on stage k's device.
    pub fn compute_ms(&self, k: usize, a: usize, b: usize) -> f64 {
        let again = if self.slots[k].recompute {
            self.recompute_work[a..b].iter().sum::<f64>()
        } else {
            0.0
        };
        (self.work[a..b].iter().sum::<f64>() + again) / self.slots[k].speed_gflops * 1e3
    }

    /// Send ms of stage k holding a..b (activations out, gradients back).
    pub fn send_ms(&self, k: usize, a: usize, b: usize) -> f64 {
        send_ms(self.slots[k].send_next, self.out_bytes(a, b))
            + send_ms(self.slots[k].send_prev, self.in_bytes(a, b))
    }

    /// Bytes a stage holding `a..b` sends on per micro-batch (activations; its gradients come
    /// back the same way).
    pub fn out_bytes(&self, a: usize, b: usize) -> u64 {
        match &self.graph {
            Some(g) => g.out_bytes(a, b),
            None => self.cut_bytes[b],
        }
    }

    /// Bytes a stage holding `a..b` receives per micro-batch.
    pub fn in_bytes(&self, a: usize, b: usize) -> u64 {
        match &self.graph {
            Some(g) => g.in_bytes(a, b),
            None => self.cut_bytes[a],
        }
    }

    /// Bytes stage k needs to hold layers a..b.
    pub fn memory_bytes(&self, k: usize, a: usize, b: usize) -> u64 {
        let s = &self.slots[k];
        let sum = |xs: &[u64]| xs.iter().fold(0u64, |acc, &x| acc.saturating_add(x));
        sum(&self.param_bytes[a..b])
            .saturating_mul(s.param_factor)
            .saturating_add(self.activation_bytes(k, a, b, sum(&self.saved_bytes[a..b])))
            .saturating_add(self.deferred.as_ref().map_or(0, |d| d.bytes(a, b)))
    }

    /// Activation bytes stage k keeps when layers a..b save `saved` bytes per micro-batch.
    fn activation_bytes(&self, k: usize, a: usize, b: usize, saved: u64) -> u64 {
        let live = self.slots[k].live_microbatches;
        if self.slots[k].recompute {
            live.saturating_mul(self.in_bytes(a, b))
                .saturating_add(saved)
        } else {
            live.saturating_mul(saved)
        }
    }

    /// The per-micro-batch time of stage k holding a..b.
    pub fn stage_ms(&self, k: usize, a: usize, b: usize) -> f64 {
        self.compute_ms(k, a, b) + self.send_ms(k, a, b)
    }

    /// Whether the split fits every stage's memory.
    pub fn fits(&self, split: &Split) -> bool {
        (0..split.stages()).all(|k| {
            let r = split.range(k);
            self.slots[k]
                .memory_bytes
                .is_none_or(|cap| self.memory_bytes(k, r.start, r.end) <= cap)
        })
    }

    /// The slowest stage's time under `split`.
    pub fn bottleneck_ms(&self, split: &Split) -> f64 {
        (0..split.stages())
            .map(|k| self.stage_ms(k, split.0[k], split.0[k + 1]))
            .fold(0.0, f64::max)
    }
}

/// Layers split as evenly as possible by count (stage k: `n·k/K .. n·(k+1)/K`). Never empty for K ≤ n.
pub fn uniform(layers: usize, stages: usize) -> Split {
    Split((0..=stages).map(|k| layers * k / stages).collect())
}

/// The contiguous split minimising the largest stage's parameter count (never an empty stage).
/// Exact: the bottleneck DP of [`auto`] with parameter counts as work, free links, no memory limit.
pub fn parameters(param_bytes: &[u64], stages: usize) -> Result<Split, PartitionError> {
    let n = param_bytes.len();
    let slot = StageSlot {
        speed_gflops: 1e3,
        memory_bytes: None,
        live_microbatches: 0,
        param_factor: 1,
        send_next: (0.0, 0.0),
        send_prev: (0.0, 0.0),
        recompute: false,
    };
    let problem = Problem {
        // Ties between equal parameter counts go to the split that also balances layer counts.
        work: param_bytes.iter().map(|&p| p as f64 + 1e-9).collect(),
        param_bytes: vec![0; n],
        saved_bytes: vec![0; n],
        cut_bytes: vec![0; n + 1],
        slots: vec![slot; stages],
        recompute_work: vec![0.0; n],
        graph: None,
        deferred: None,
    };
    auto(&problem)
}

/// The split minimising the bottleneck stage time subject to each device's memory.
///
/// Dynamic programme over (stage k, layers placed b): `f[k][b] = min_a max(f[k-1][a],
/// cost_k(a, b))`, the classic linear-partition recurrence (Skiena, *The Algorithm Design
/// Manual* §8.5; torchgpipe's `blockpartition` solves the homogeneous case) extended with
/// per-stage device speed, boundary communication and memory. Exact prunings keep it fast:
/// * a feasible split (uniform, or cut in proportion to device speed) bounds the optimum by `U`,
///   so stage k can only end where the work before it fits `U · (speeds of stages 0..=k)` and
///   the work after it fits `U · (speeds of the stages after k)`: a narrow band of cells;
/// * scanning `a` downwards, stage compute and memory only grow, so the scan stops once compute
///   alone reaches the best cost found for the cell, exceeds `U`, or memory overflows.
///
/// Complexity: O(K·B·W) time and O(K·N) memory for N layers and K stages, where B is the band
/// width (the layers the bound leaves possible for a cut) and W the layers a stage holds under
/// `U`; both are N in the worst case, giving the recurrence's O(K·N²). 10,000 layers onto 64
/// heterogeneous stages plan in ≈ 5 ms (`cargo bench -p brigade-benches --bench planner`).
pub fn auto(p: &Problem) -> Result<Split, PartitionError> {
    let n = p.layers();
    let k_total = p.slots.len();
    if k_total == 0 || k_total > n {
        return Err(PartitionError::TooManyStages {
            layers: n,
            stages: k_total,
        });
    }
    let pre = Prefix::new(p);
    // (A recomputing stage's second forward only adds: the work-only bounds below stay valid.)
    let compute = |k: usize, a: usize, b: usize| {
        let again = if p.slots[k].recompute {
            pre.rework[b] - pre.rework[a]
        } else {
            0.0
        };
        (pre.work[b] - pre.work[a] + again) / p.slots[k].speed_gflops * 1e3
    };
    let memory = |k: usize, a: usize, b: usize| {
        let s = &p.slots[k];
        (pre.params[b] - pre.params[a])
            .saturating_mul(s.param_factor)
            .saturating_add(p.activation_bytes(k, a, b, pre.saved[b] - pre.saved[a]))
            .saturating_add(p.deferred.as_ref().map_or(0, |d| d.bytes(a, b)))
    };
    let cost = |k: usize, a: usize, b: usize| {
        compute(k, a, b)
            + send_ms(p.slots[k].send_next, p.out_bytes(a, b))
            + send_ms(p.slots[k].send_prev, p.in_bytes(a, b))
    };

    // A feasible split bounds the optimum: no stage of it computes longer than `bound`, so the
    // first k+1 stages hold at most bound·(their speeds) of work and the rest the remainder.
    let bound = [uniform(n, k_total), proportional(p, &pre.work)]
        .iter()
        .filter(|s| p.fits(s))
        .map(|s| p.bottleneck_ms(s))
        .fold(f64::INFINITY, f64::min)
        * (1.0 + 1e-9);
    let mut speed_prefix = vec![0.0; k_total + 1];
    for k in 0..k_total {
        speed_prefix[k + 1] = speed_prefix[k] + p.slots[k].speed_gflops;
    }
    let total = pre.work[n];
    // May stage k end at layer b in a split whose compute never exceeds `bound`?
    let in_band = |k: usize, b: usize| {
        bound.is_infinite()
            || pre.work[b] <= bound * speed_prefix[k + 1] / 1e3 * (1.0 + 1e-9) + 1e-12
                && total - pre.work[b]
                    <= bound * (speed_prefix[k_total] - speed_prefix[k + 1]) / 1e3 * (1.0 + 1e-9)
                        + 1e-12
    };

    let width = n + 1;
    let mut f = vec![f64::INFINITY; k_total * width];
    let mut arg = vec![u32::MAX; k_total * width];
    for b in 1..=n - (k_total - 1) {
        if p.slots[0]
            .memory_bytes
            .is_some_and(|cap| memory(0, 0, b) > cap)
        {
            break;
        }
        if !in_band(0, b) {
            continue;
        }
        f[b] = cost(0, 0, b);
        arg[b] = 0;
    }
    for k in 1..k_total {
        let cap = p.slots[k].memory_bytes;
        for b in (k + 1)..=(n - (k_total - 1 - k)) {
            if !in_band(k, b) {
                continue;
            }
            let mut best = f64::INFINITY;
            let mut best_a = u32::MAX;
            for a in (k..b).rev() {
                let c = compute(k, a, b);
                if c >= best || c > bound {
                    break;
                }
                if cap.is_some_and(|cap| memory(k, a, b) > cap) {
                    // Without recomputation memory only grows as `a` falls; with it, the kept
                    // input (the cut at `a`) may shrink again, so look further.
                    if p.slots[k].recompute {
                        continue;
                    }
                    break;
                }
                let prev = f[(k - 1) * width + a];
                if prev >= best {
                    continue;
                }
                let v = prev.max(cost(k, a, b));
                if v < best {
                    best = v;
                    best_a = a as u32;
                }
            }
            f[k * width + b] = best;
            arg[k * width + b] = best_a;
        }
    }
    if !f[(k_total - 1) * width + n].is_finite() {
        return Err(does_not_fit(p));
    }
    let mut bounds = vec![n; k_total + 1];
    for k in (0..k_total).rev() {
        bounds[k] = arg[k * width + bounds[k + 1]] as usize;
    }
    Ok(Split(bounds))
}

/// Cuts where the prefix of work reaches each stage's share of the total speed, so fast devices
/// get more layers; a cheap near-optimal split that tightens `auto`'s bound.
fn proportional(p: &Problem, work_prefix: &[f64]) -> Split {
    let n = p.layers();
    let k_total = p.slots.len();
    let speed: f64 = p.slots.iter().map(|s| s.speed_gflops).sum();
    let mut bounds = vec![0; k_total + 1];
    let mut acc = 0.0;
    for k in 0..k_total - 1 {
        acc += p.slots[k].speed_gflops / speed;
        let target = acc * work_prefix[n];
        let lo = bounds[k] + 1;
        let hi = n - (k_total - 1 - k);
        let b = work_prefix.partition_point(|&w| w < target).clamp(lo, hi);
        bounds[k + 1] = b;
    }
    bounds[k_total] = n;
    Split(bounds)
}

/// Names the stage whose memory cannot hold even its smallest possible share.
fn does_not_fit(p: &Problem) -> PartitionError {
    let n = p.layers();
    let k_total = p.slots.len();
    let worst = (0..k_total)
        .filter_map(|k| {
            let cap = p.slots[k].memory_bytes?;
            let smallest = (0..n)
                .map(|i| p.memory_bytes(k, i, i + 1))
                .min()
                .unwrap_or(0);
            Some((k, smallest, cap))
        })
        .max_by_key(|&(_, need, cap)| need.saturating_sub(cap))
        .unwrap_or((0, 0, 0));
    if worst.1 <= worst.2 {
        let available = (0..k_total)
            .map(|k| p.slots[k].memory_bytes.unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add);
        return PartitionError::DoesNotFitTogether {
            layers: n,
            stages: k_total,
            needed: p.memory_bytes(0, 0, n),
            available,
        };
    }
    PartitionError::DoesNotFit {
        layers: n,
        stages: k_total,
        stage: worst.0,
        needed: worst.1,
        available: worst.2,
    }
}
