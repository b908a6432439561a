//! Per-layer costs for one micro-batch: estimated from FLOPs, or measured (a profile).
//!
//! Compute is kept as *work* in GFLOP so devices of different speeds divide it by their own
//! GFLOP/s. A profile's milliseconds become work by multiplying with the speed of the device
//! the profile was measured on (`device_gflops` in the file, else the topology's first device).

use crate::error::ConfigError;
use crate::graph::LayerGraph;
use crate::topology::Topology;
use serde::{Deserialize, Serialize};

/// The profile format `brigade profile` writes and `brigade plan --profile` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub layers: Vec<ProfiledLayer>,
    /// Effective GFLOP/s of the device the profile was measured on (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_gflops: Option<f64>,
    /// Samples per micro-batch the profile was measured with (optional, informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microbatch_size: Option<usize>,
}

/// One layer's measured cost for one micro-batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfiledLayer {
    pub name: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Bytes of the layer's output for one micro-batch.
    pub activation_bytes: u64,
    /// Bytes of the layer's parameters.
    pub param_bytes: u64,
    /// The same layer on more compute threads (`brigade profile --threads 1,2,4`); the
    /// figures above are on one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_threads: Vec<ThreadTiming>,
}

/// One layer's forward and backward on `threads` compute threads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThreadTiming {
    pub threads: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &str) -> Result<Profile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ConfigError::Syntax {
            file: path.to_string(),
            line: e.line(),
            column: e.column(),
            message: format!("{e} (expected {{\"layers\": [{{\"name\", \"forward_ms\", \"backward_ms\", \"activation_bytes\", \"param_bytes\"}}, ...]}})"),
        })
    }
}

/// Costs of each layer for one micro-batch.
#[derive(Debug, Clone)]
pub struct Costs {
    /// Forward work per layer, GFLOP.
    pub forward_gflop: Vec<f64>,
    /// Backward work per layer, GFLOP.
    pub backward_gflop: Vec<f64>,
    /// Parameter bytes per layer (f32).
    pub param_bytes: Vec<u64>,
    /// Bytes kept alive per layer for one in-flight micro-batch.
    pub saved_bytes: Vec<u64>,
    /// Bytes crossing a cut before layer c, one micro-batch (len n + 1).
    pub cut_bytes: Vec<u64>,
    /// Skip connections: each tensor's bytes and who takes it (None for a chain).
    pub graph: Option<crate::partition::GraphCuts>,
    /// Whether the costs came from a profile.
    pub measured: bool,
    /// How much faster the whole model computes on T threads than on one, measured by a
    /// profile: (T, speed-up), T > 1.
    pub thread_speedup: Vec<(usize, f64)>,
}

impl Costs {
    /// Estimated costs: forward FLOPs from shapes, backward = 2 × forward.
    pub fn estimate(graph: &LayerGraph, microbatch: usize) -> Costs {
        let mb = microbatch as f64;
        let fwd: Vec<f64> = graph
            .layers()
            .map(|l| l.cost.forward_flops * mb / 1e9)
            .collect();
        Costs {
            backward_gflop: fwd.iter().map(|f| 2.0 * f).collect(),
            forward_gflop: fwd,
            param_bytes: graph.layers().map(|l| l.cost.params * 4).collect(),
            saved_bytes: graph
                .layers()
                .map(|l| l.cost.saved_bytes.saturating_mul(microbatch as u64))
                .collect(),
            cut_bytes: graph
                .cut_bytes()
                .into_iter()
                .map(|b| b.saturating_mul(microbatch as u64))
                .collect(),
            graph: graph.cuts(microbatch as u64),
            measured: false,
            thread_speedup: Vec::new(),
        }
    }

    /// How much faster a rank on `threads` threads computes than on one, and whether that was
    /// measured. Thread counts a profile did not measure are assumed to scale linearly (an
    /// optimistic bound: `brigade profile --threads` measures them).
    pub fn speedup(&self, threads: usize) -> (f64, bool) {
        if threads <= 1 {
            return (1.0, true);
        }
        match self.thread_speedup.iter().find(|(t, _)| *t == threads) {
            Some((_, s)) => (*s, true),
            None => (threads as f64, false),
        }
    }

    /// Costs from a profile; `profile_file` names it in errors.
    pub fn from_profile(
        topo: &Topology,
        graph: &LayerGraph,
        profile: &Profile,
        profile_file: &str,
    ) -> Result<Costs, ConfigError> {
        let n = graph.len();
        if profile.layers.len() != n {
            return Err(ConfigError::invalid(
                profile_file,
                "layers",
                format!(
                    "has {} entries but {} has {n} layers",
                    profile.layers.len(),
                    topo.file
                ),
                format!(
                    "Make the profile for this model: brigade profile {} --out {profile_file}",
                    topo.file
                ),
            ));
        }
        let speed = profile
            .device_gflops
            .unwrap_or(topo.hosts[0].devices[0].speed_gflops);
        let mbs = topo.train.microbatch_size() as u64;
        let mut costs = Costs::estimate(graph, topo.train.microbatch_size());
        for (i, l) in profile.layers.iter().enumerate() {
            for (what, v) in [("forward_ms", l.forward_ms), ("backward_ms", l.backward_ms)] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(ConfigError::invalid(
                        profile_file,
                        format!("layers[{i}].{what}"),
                        format!("must be a time of 0 or more, found {v}"),
                        "Re-run brigade profile.",
                    ));
                }
            }
            costs.forward_gflop[i] = l.forward_ms * 1e-3 * speed;
            costs.backward_gflop[i] = l.backward_ms * 1e-3 * speed;
            costs.param_bytes[i] = l.param_bytes;
            // The measured output size replaces the estimate on the chain edge after layer i.
            let estimated = graph.layer(i).cost.activation_bytes * mbs;
            if i + 1 < n && estimated > 0 {
                costs.cut_bytes[i + 1] = costs.cut_bytes[i + 1] - estimated + l.activation_bytes;
            }
            if let Some(g) = costs.graph.as_mut() {
                g.bytes[i] = l.activation_bytes;
            }
        }
        costs.thread_speedup = thread_speedup(profile, profile_file)?;
        costs.measured = true;
        Ok(costs)
    }

    /// The same costs with activations of `bytes` per element instead of f32's 4 (what a layer
    /// keeps for backward and what crosses a cut; parameters stay f32).
    pub fn with_activation_bytes_per_element(mut self, bytes: u64) -> Costs {
        let scale = |v: &mut u64| *v = *v / 4 * bytes + *v % 4 * bytes / 4;
        self.saved_bytes.iter_mut().for_each(scale);
        self.cut_bytes.iter_mut().for_each(scale);
        if let Some(g) = self.graph.as_mut() {
            g.bytes.iter_mut().for_each(scale);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.forward_gflop.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forward_gflop.is_empty()
    }
}

/// The whole model's speed-up on each thread count the profile measured: the one-thread
/// total over that count's, over layers measured at both.
fn thread_speedup(profile: &Profile, file: &str) -> Result<Vec<(usize, f64)>, ConfigError> {
    let mut counts: Vec<usize> = Vec::new();
    for (i, l) in profile.layers.iter().enumerate() {
        for (j, at) in l.at_threads.iter().enumerate() {
            let ok = |v: f64| v >= 0.0 && v.is_finite();
            if at.threads < 2 || !ok(at.forward_ms) || !ok(at.backward_ms) {
                return Err(ConfigError::invalid(
                    file,
                    format!("layers[{i}].at_threads[{j}]"),
                    "expected threads ≥ 2 and times of 0 or more",
                    "Re-run brigade profile --threads.",
                ));
            }
            if !counts.contains(&at.threads) {
                counts.push(at.threads);
            }
        }
    }
    counts.sort_unstable();
    Ok(counts
        .into_iter()
        .filter_map(|t| {
            let (one, many) = profile.layers.iter().fold((0.0, 0.0), |(o, m), l| {
                match l.at_threads.iter().find(|a| a.threads == t) {
                    Some(a) => (
                        o + l.forward_ms + l.backward_ms,
                        m + a.forward_ms + a.backward_ms,
                    ),
                    None => (o, m),
                }
            });
            (many > 0.0).then(|| (t, one / many))
        })
        .collect())
}
