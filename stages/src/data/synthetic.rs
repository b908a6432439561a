//! Synthetic data (`data.source = "synthetic"`).
//!
//! Every sample is a pure function of (data.seed, global sample index), so a micro-batch is the
//! same slice of the batch on every stage and in the reference, and the last stage can make its
//! targets without receiving anything. Feature inputs are uniform in [-1, 1) and labelled by a
//! fixed random two-layer teacher network (its argmax per position for cross-entropy, its output
//! for mse), so there is something to learn; token inputs are walks of a fixed random Markov
//! chain whose next token is the target.

use super::{Batches, DataError};
use crate::act::Act;
use crate::init::{Stream, rng, uniform_values};
use crate::loss::Target;
use brigade_partitioner::{Loss, Topology};
use burn::prelude::*;
use rand::Rng;

const TEACHER_HIDDEN: usize = 32;

impl Batches for SyntheticData {
    fn inputs(&mut self, step: u64, mb: u64, device: &Device) -> Result<Act, DataError> {
        Ok(SyntheticData::inputs(self, step, mb, device))
    }

    fn targets(&mut self, step: u64, mb: u64, device: &Device) -> Result<Target, DataError> {
        Ok(SyntheticData::targets(self, step, mb, device))
    }
}

#[derive(Debug, Clone)]
pub struct SyntheticData {
    seed: u64,
    batch: usize,
    microbatch: usize,
    /// One sample's input shape.
    input: Vec<usize>,
    /// One sample's output shape.
    output: Vec<usize>,
    loss: Loss,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Features {
        w1: Vec<f32>,
        w2: Vec<f32>,
    },
    /// Row-major cumulative transition probabilities, `vocab × vocab`.
    Markov {
        vocab: usize,
        cumulative: Vec<f32>,
    },
}

impl SyntheticData {
    pub fn new(topo: &Topology) -> Self {
        let graph = topo.model.graph();
        let output = graph.layer(graph.len() - 1).output_shape.clone();
        let seed = topo.data.seed;
        let source = match topo.model.token_vocab() {
            Some(vocab) => {
                let mut r = rng(Stream::Teacher, &[seed]);
                let mut cumulative = Vec::with_capacity(vocab * vocab);
                for _ in 0..vocab {
                    // Peaked rows (a few likely successors) make the chain learnable.
                    let row: Vec<f32> = (0..vocab).map(|_| r.random::<f32>().powi(8)).collect();
                    let total: f32 = row.iter().sum();
                    let mut acc = 0.0;
                    cumulative.extend(row.iter().map(|p| {
                        acc += p / total;
                        acc
                    }));
                }
                Source::Markov { vocab, cumulative }
            }
            _ => {
                let n_in: usize = topo.model.input.iter().product();
                let n_out: usize = output.iter().product();
                let mut r = rng(Stream::Teacher, &[seed]);
                let w1 = uniform_values(&mut r, n_in * TEACHER_HIDDEN, (3.0 / n_in as f32).sqrt());
                let w2 = uniform_values(
                    &mut r,
                    TEACHER_HIDDEN * n_out,
                    (3.0 / TEACHER_HIDDEN as f32).sqrt(),
                );
                Source::Features { w1, w2 }
            }
        };
        SyntheticData {
            seed,
            batch: topo.train.batch,
            microbatch: topo.train.microbatch_size(),
            input: topo.model.input.clone(),
            output,
            loss: topo.model.loss,
            source,
        }
    }

    fn sample_index(&self, step: u64, mb: u64, i: usize) -> u64 {
        step * self.batch as u64 + mb * self.microbatch as u64 + i as u64
    }

    fn features(&self, sample: u64) -> Vec<f32> {
        let n: usize = self.input.iter().product();
        uniform_values(&mut rng(Stream::Data, &[self.seed, sample]), n, 1.0)
    }

    fn tokens(&self, sample: u64, vocab: usize, cumulative: &[f32]) -> Vec<i64> {
        let len = self.input[0] + 1;
        let mut r = rng(Stream::Data, &[self.seed, sample]);
        let mut seq = Vec::with_capacity(len);
        let mut cur = r.random_range(0..vocab);
        seq.push(cur as i64);
        for _ in 1..len {
            let row = &cumulative[cur * vocab..(cur + 1) * vocab];
            let u: f32 = r.random();
            cur = row.partition_point(|&c| c < u).min(vocab - 1);
            seq.push(cur as i64);
        }
        seq
    }

    /// The inputs of micro-batch `mb` of step `step` (0-based), `[microbatch, ..input]`.
    pub fn inputs(&self, step: u64, mb: u64, device: &Device) -> Act {
        self.host_inputs(step, mb).upload(device)
    }

    /// The targets of micro-batch `mb` of step `step`.
    pub fn targets(&self, step: u64, mb: u64, device: &Device) -> Target {
        self.host_targets(step, mb).upload(device)
    }

    /// [`Self::inputs`] as host values, before they go to a device.
    pub(super) fn host_inputs(&self, step: u64, mb: u64) -> HostAct {
        let mut shape = vec![self.microbatch];
        shape.extend_from_slice(&self.input);
        match &self.source {
            Source::Markov { vocab, cumulative } => {
                let t = self.input[0];
                let ids: Vec<i64> = (0..self.microbatch)
                    .flat_map(|i| {
                        self.tokens(self.sample_index(step, mb, i), *vocab, cumulative)[..t]
                            .to_vec()
                    })
                    .collect();
                HostAct::Tokens(ids, shape)
            }
            Source::Features { .. } => {
                let x: Vec<f32> = (0..self.microbatch)
                    .flat_map(|i| self.features(self.sample_index(step, mb, i)))
                    .collect();
                HostAct::F32(x, shape)
            }
        }
    }

    /// [`Self::targets`] as host values, before they go to a device.
    pub(super) fn host_targets(&self, step: u64, mb: u64) -> HostTarget {
        let b = self.microbatch;
        match &self.source {
            Source::Markov { vocab, cumulative } => {
                let t = self.input[0];
                let classes = *self.output.last().unwrap() as i64;
                let ids: Vec<i64> = (0..b)
                    .flat_map(|i| {
                        self.tokens(self.sample_index(step, mb, i), *vocab, cumulative)[1..=t]
                            .iter()
                            .map(|&id| id % classes)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                HostTarget::Ids(ids, vec![b, t])
            }
            Source::Features { w1, w2 } => {
                let n_out: usize = self.output.iter().product();
                let outs: Vec<Vec<f32>> = (0..b)
                    .map(|i| {
                        let x = self.features(self.sample_index(step, mb, i));
                        teacher(&x, w1, w2, n_out)
                    })
                    .collect();
                let mut shape = vec![b];
                shape.extend_from_slice(&self.output);
                match self.loss {
                    Loss::Mse => HostTarget::Values(outs.concat(), shape),
                    Loss::CrossEntropy => {
                        let classes = *self.output.last().unwrap();
                        let ids: Vec<i64> = outs
                            .iter()
                            .flat_map(|o| o.chunks(classes).map(argmax).collect::<Vec<_>>())
                            .collect();
                        // One class per sample, or one per position of a `[tokens, vocab]` output.
                        shape.pop();
                        HostTarget::Ids(ids, shape)
                    }
                }
            }
        }
    }
}

/// A micro-batch's inputs on the host.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum HostAct {
    F32(Vec<f32>, Vec<usize>),
    Tokens(Vec<i64>, Vec<usize>),
}

impl HostAct {
    pub(super) fn upload(self, device: &Device) -> Act {
        match self {
            HostAct::F32(x, shape) => Act::from_f32(x, &shape, device),
            HostAct::Tokens(ids, shape) => Act::from_tokens(ids, &shape, device),
        }
    }
}

/// A micro-batch's targets on the host: values (mse), or class ids shaped `[batch]` or
/// `[batch, tokens]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum HostTarget {
    Values(Vec<f32>, Vec<usize>),
    Ids(Vec<i64>, Vec<usize>),
}

impl HostTarget {
    pub(super) fn upload(self, device: &Device) -> Target {
        match self {
            HostTarget::Values(v, shape) => Target::Values(Act::from_f32(v, &shape, device)),
            HostTarget::Ids(ids, shape) if shape.len() == 1 => {
                Target::Classes(Tensor::from_data(TensorData::new(ids, shape), device))
            }
            HostTarget::Ids(ids, shape) => {
                Target::Tokens(Tensor::from_data(TensorData::new(ids, shape), device))
            }
        }
    }
}

fn teacher(x: &[f32], w1: &[f32], w2: &[f32], n_out: usize) -> Vec<f32> {
    // A mildly non-linear teacher (a residual tanh): learnable quickly, but not by a linear model alone.
    // Each hidden unit's sum runs over the inputs in order, from the neutral element `Sum` starts
    // from, as `iter().sum()` would: the same values bit for bit. Its 32 sums advance side by
    // side over `w1`'s contiguous rows, so they vectorise instead of waiting on one chain of
    // additions (at batch 4096 a step's targets took ~180 ms on one core that way, more than
    // the GPU's step).
    let mut z = [std::iter::empty::<f32>().sum::<f32>(); TEACHER_HIDDEN];
    for (v, row) in x.iter().zip(w1.chunks_exact(TEACHER_HIDDEN)) {
        for (acc, w) in z.iter_mut().zip(row) {
            *acc += v * w;
        }
    }
    let hidden: Vec<f32> = z
        .iter()
        .map(|&s| {
            let z = s * 2.0;
            z + z.tanh()
        })
        .collect();
    teacher_out(&hidden, w2, n_out)
}

/// The teacher's output layer: `hidden · w2`.
fn teacher_out(hidden: &[f32], w2: &[f32], n_out: usize) -> Vec<f32> {
    (0..n_out)
        .map(|o| {
            hidden
                .iter()
                .enumerate()
                .map(|(h, v)| v * w2[h * n_out + o])
                .sum()
        })
        .collect()
}

/// The teacher as it was first written (one chain of additions per hidden unit): the
/// reference [`teacher`] must equal bit for bit.
#[cfg(test)]
fn teacher_chained(x: &[f32], w1: &[f32], w2: &[f32], n_out: usize) -> Vec<f32> {
    let hidden: Vec<f32> = (0..TEACHER_HIDDEN)
        .map(|h| {
            let z = x
                .iter()
                .enumerate()
                .map(|(i, v)| v * w1[i * TEACHER_HIDDEN + h])
                .sum::<f32>()
                * 2.0;
            z + z.tanh()
        })
        .collect();
    teacher_out(&hidden, w2, n_out)
}

fn argmax(xs: &[f32]) -> i64 {
    xs.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vectorised_teacher_equals_the_chained_one_bit_for_bit() {
        let mut r = rng(Stream::Teacher, &[9]);
        let (n_in, n_out) = (1024, 10);
        let w1 = uniform_values(&mut r, n_in * TEACHER_HIDDEN, (3.0 / n_in as f32).sqrt());
        let w2 = uniform_values(&mut r, TEACHER_HIDDEN * n_out, 0.3);
        for sample in 0..64 {
            let mut x = uniform_values(&mut rng(Stream::Data, &[9, sample]), n_in, 1.0);
            if sample == 0 {
                x.iter_mut().for_each(|v| *v = -0.0);
            }
            let (a, b) = (
                teacher(&x, &w1, &w2, n_out),
                teacher_chained(&x, &w1, &w2, n_out),
            );
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "sample {sample}");
        }
    }
}
