//! The validated topology: what every other part of brigade reads. It is only built by
//! [`crate::load`], so holding a `Topology` means every key was checked.

pub use crate::model::{Layer, Loss, Model};
use serde::Serialize;

/// A validated topology file.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// The file it came from (used in messages).
    pub file: String,
    pub name: String,
    pub model: Model,
    pub data: Data,
    pub eval: Eval,
    pub train: Train,
    pub hosts: Vec<Host>,
    pub links: Vec<Link>,
    pub partition: Partition,
    pub tracking: Tracking,
}

/// `[tracking]`: where a run's parameters, metrics and artifacts go besides local files.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tracking {
    /// An MLflow tracking server, `http://HOST:PORT` or `https://…` (`--mlflow` overrides it).
    pub mlflow: Option<String>,
    /// The MLflow experiment (default: the topology's name).
    pub experiment: Option<String>,
    /// The MLflow run's name (default: MLflow's own).
    pub run_name: Option<String>,
}

impl Tracking {
    /// Checks an MLflow server address: `http://` or `https://`, a host, no query or fragment.
    pub fn check_uri(uri: &str) -> Result<(), String> {
        let rest = uri
            .strip_prefix("http://")
            .or_else(|| uri.strip_prefix("https://"))
            .ok_or_else(|| format!("\"{uri}\" is not an http:// or https:// address"))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("\"{uri}\" names no host"));
        }
        if rest.contains(['?', '#', ' ']) {
            return Err(format!("\"{uri}\" holds a query, fragment or space"));
        }
        if host.contains('@') {
            return Err(format!(
                "\"{uri}\" carries credentials; pass them in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub source: DataSource,
    /// Seeds synthetic samples, and the shuffle of Parquet data.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    Synthetic,
    Parquet(ParquetSource),
}

/// `[data] source = "parquet"`: where the data is and which columns to read. Paths are as
/// written, resolved against the topology file's directory when relative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParquetSource {
    /// A file, a directory of part files, or a glob (`*` and `?` in the last component).
    pub path: String,
    /// What each sample is made of.
    pub columns: Columns,
    /// Held-out data for evaluation, if any.
    pub validation: Option<Validation>,
    /// Rows in the shuffle buffer (0: no shuffle, file order).
    pub shuffle_buffer: usize,
    /// Steps of batches the reader thread prepares ahead of the first stage.
    pub prefetch: usize,
    /// The directory relative paths are taken from: the topology file's.
    pub base: String,
}

impl ParquetSource {
    /// A path of this source (`path`, or the validation path) as a file system path.
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(path);
        if p.is_absolute() || self.base.is_empty() {
            p.to_path_buf()
        } else {
            std::path::Path::new(&self.base).join(p)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Columns {
    /// `features`: one list column or several scalar columns; `label`: one integer column
    /// (cross-entropy) or float columns (mse), in the same two forms.
    Features {
        features: Vec<String>,
        label: Vec<String>,
    },
    /// One list-of-integers column: a sequence's first `model.input[0]` tokens are the inputs,
    /// the same shifted by one the targets (it holds `model.input[0] + 1` tokens or more).
    Tokens { tokens: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Another dataset (same forms as `path`).
    Path(String),
    /// This fraction of the training data's row groups (the last ones in file order).
    Fraction(f64),
}

/// The directory of topology `file`, against which its relative data paths are read.
pub fn base_dir(file: &str) -> String {
    std::path::Path::new(file)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

impl Data {
    /// Reads relative data paths from the directory of topology `file` (a plan's topology is
    /// parsed under another name, then rebased onto the file it came from).
    pub fn set_base(&mut self, file: &str) {
        if let DataSource::Parquet(p) = &mut self.source {
            p.base = base_dir(file);
        }
    }

    /// The Parquet source, if the data comes from files.
    pub fn parquet(&self) -> Option<&ParquetSource> {
        match &self.source {
            DataSource::Parquet(p) => Some(p),
            DataSource::Synthetic => None,
        }
    }
}

/// `[eval]`: evaluation on the validation data during training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eval {
    /// Evaluate after every this many steps (0: only after the last step).
    pub every: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Train {
    pub steps: usize,
    pub batch: usize,
    pub microbatches: usize,
    pub schedule: ScheduleKind,
    pub optimizer: Optimizer,
    pub lr: f64,
    /// How the learning rate moves over the steps (`lr` is its peak).
    pub lr_schedule: LrSchedule,
    /// Scale gradients so that their global L2 norm (the whole model's) is at most this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    pub seed: u64,
    /// Keep only each micro-batch's chunk input between forward and backward, and recompute
    /// the forward at backward time (GPipe's re-materialisation): less memory, more compute.
    /// `true`: every chunk.
    pub recompute: bool,
    /// The chunks that recompute when `recompute = [ids]` names some (empty otherwise).
    pub recompute_chunks: Vec<usize>,
    /// The element type stages compute in and send on the wire; parameters and optimizer state
    /// stay f32 (master weights).
    pub dtype: TrainDType,
    /// Linear layers on `[rows, features]` compute their weight gradients once per step, over
    /// every micro-batch's rows at once (one large product instead of M small ones), and run
    /// their forward and input gradient in the orientation the CPU kernel is fastest at.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub batch_weight_grads: bool,
}

/// `[train] dtype`: what activations and gradients are computed in and sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrainDType {
    #[default]
    F32,
    Bf16,
    F16,
}

impl TrainDType {
    pub fn name(self) -> &'static str {
        match self {
            TrainDType::F32 => "f32",
            TrainDType::Bf16 => "bf16",
            TrainDType::F16 => "f16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            TrainDType::F32 => 4,
            TrainDType::Bf16 | TrainDType::F16 => 2,
        }
    }
}

impl Train {
    /// How linear products take their weight gradients in this run (the one choice every
    /// stage and the planner's time and memory model share).
    pub fn weight_grads(&self) -> crate::layers::WeightGrads {
        crate::layers::WeightGrads::choose(
            self.schedule.needs().splits_weight_grads,
            self.batch_weight_grads,
        )
    }

    /// Whether chunk `chunk` recomputes its forward at backward time.
    pub fn recomputes(&self, chunk: usize) -> bool {
        self.recompute || self.recompute_chunks.contains(&chunk)
    }

    /// Whether any chunk recomputes.
    pub fn recomputes_any(&self) -> bool {
        self.recompute || !self.recompute_chunks.is_empty()
    }

    /// The learning rate of step `s` (0-based).
    pub fn lr_at(&self, s: u64) -> f64 {
        self.lr_schedule.lr_at(self.lr, s, self.steps)
    }

    /// Samples per micro-batch.
    pub fn microbatch_size(&self) -> usize {
        self.batch / self.microbatches
    }
}

/// The schedules live in their own pure crate; re-exported so callers name them as before.
pub use brigade_schedules::ScheduleKind;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        weight_decay: f64,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// torch.optim.AdamW: Adam with the weight decay applied to the parameter (`p·(1 − lr·wd)`)
    /// rather than added to the gradient.
    Adamw {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

/// `[train] lr_schedule` with `warmup_steps` and `min_lr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` after a linear warm-up over `warmup_steps` (0: none).
    Constant { warmup_steps: usize },
    /// Linear warm-up, then a half cosine from `lr` down to `min_lr` at the last step.
    Cosine { warmup_steps: usize, min_lr: f64 },
}

impl LrSchedule {
    /// The learning rate of step `s` (0-based) of `steps`, peaking at `lr`: `lr·(s+1)/W` while
    /// `s < W`; then `lr`, or `min_lr + (lr − min_lr)·(1 + cos(π·(s−W)/(S−W)))/2` for cosine.
    pub fn lr_at(&self, lr: f64, s: u64, steps: usize) -> f64 {
        let (w, min_lr) = match *self {
            LrSchedule::Constant { warmup_steps } => (warmup_steps as u64, None),
            LrSchedule::Cosine {
                warmup_steps,
                min_lr,
            } => (warmup_steps as u64, Some(min_lr)),
        };
        if s < w {
            return lr * (s + 1) as f64 / w as f64;
        }
        match min_lr {
            None => lr,
            Some(min_lr) => {
                let span = (steps as u64).saturating_sub(w).max(1) as f64;
                let t = ((s - w) as f64 / span).min(1.0);
                min_lr + (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }
}

impl Optimizer {
    /// Copies of the parameters the optimizer keeps besides the parameters themselves
    /// (gradients included): SGD with momentum 2, plain SGD 1, Adam 3.
    pub fn state_copies(&self) -> u64 {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => 1,
            Optimizer::Sgd { .. } => 2,
            Optimizer::Adam { .. } | Optimizer::Adamw { .. } => 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    /// Address ranks on this host bind to and are reached at; `None`: found at run time
    /// (rendezvous or `--peers`).
    pub address: Option<String>,
    /// First TCP port of this host's ranks (rank r listens on port + r).
    pub port: u16,
    pub devices: Vec<Device>,
    /// Compute threads for all stages of this host together (default: the host's cores).
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda(u32),
}

impl DeviceKind {
    /// A device as a topology writes it: `"cpu"`, `"cpu:T"` (a CPU rank computing on T
    /// threads) or `"cuda:N"`; the kind and the threads the spec states.
    pub fn parse_spec(spec: &str) -> Option<(DeviceKind, Option<usize>)> {
        match spec.strip_prefix("cpu:") {
            Some(t) => t
                .parse()
                .ok()
                .filter(|t| *t > 0)
                .map(|t| (DeviceKind::Cpu, Some(t))),
            None => DeviceKind::parse(spec).map(|k| (k, None)),
        }
    }

    /// `"cpu"` or `"cuda:N"`, as a topology writes devices.
    pub fn parse(spec: &str) -> Option<DeviceKind> {
        match spec {
            "cpu" => Some(DeviceKind::Cpu),
            _ => spec
                .strip_prefix("cuda:")?
                .parse()
                .ok()
                .map(DeviceKind::Cuda),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Device {
    pub kind: DeviceKind,
    /// Effective speed in GFLOP/s used to turn estimated FLOPs into time.
    pub speed_gflops: f64,
    /// Memory available for this stage's parameters, optimizer state and activations.
    pub memory_bytes: Option<u64>,
    /// Compute threads of the rank on this device (`"cpu:T"` or the device table's
    /// `threads`); `None`: as `[partition] threads` says, else one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

/// Default first TCP port of a host's stages.
pub const DEFAULT_PORT: u16 = 29500;

/// Default effective speeds when a topology gives none (a conservative CPU core set, a GPU).
pub const DEFAULT_CPU_GFLOPS: f64 = 50.0;
pub const DEFAULT_CUDA_GFLOPS: f64 = 10_000.0;

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// The two host names (the same name twice describes the link inside one host).
    pub hosts: [String; 2],
    pub bandwidth_gbps: f64,
    pub latency_ms: f64,
}

/// Link used between stages on one host when no `[[links]]` entry names it (ipc://, memory copies).
pub const INTRA_HOST_LINK: (f64, f64) = (40.0, 0.02);
/// Link used between hosts when no `[[links]]` entry names them (10 Gbit Ethernet).
pub const INTER_HOST_LINK: (f64, f64) = (10.0, 0.1);

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    /// Ranks in the pipeline.
    pub stages: usize,
    pub method: Method,
    /// Chunks each rank holds (interleaved 1F1B's v; 1 otherwise). The model is cut into
    /// `stages × chunks_per_rank` chunks and rank r holds chunks r, r + stages, ….
    pub chunks_per_rank: usize,
    /// Copies of the pipeline (data parallelism): replica d's ranks are d·stages ..
    /// (d+1)·stages, on the devices in that order; each trains on its share of every batch
    /// and the copies of a chunk average their gradients (ring all-reduce) before each step.
    pub replicas: usize,
    /// `replicas = "auto"`: the planner chooses replicas (and stages, unless given) by
    /// simulated step time; `replicas` is 1 until it has.
    pub replicas_auto: bool,
    /// Whether `stages` was written (else it is the default, and "auto" may choose it).
    pub stages_given: bool,
    /// Compute threads of every CPU rank whose device does not say (`[partition] threads`);
    /// `None`: one, as before threads per rank existed.
    pub threads: Option<usize>,
    /// `threads = "auto"`: the planner chooses threads per rank (with replicas and stages)
    /// within each host's cores; `threads` is `None` until it has.
    pub threads_auto: bool,
    /// `[partition] bucket_mb`: replicas sum a chunk's gradients in buckets of this many MiB,
    /// each started as soon as its gradients are final (default [`DEFAULT_BUCKET_MB`]).
    pub bucket_mb: f64,
}

/// PyTorch DistributedDataParallel's bucket size, the comparison users make.
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

impl Partition {
    /// [`Partition::bucket_mb`] in bytes (at least one value).
    pub fn bucket_bytes(&self) -> usize {
        ((self.bucket_mb * 1024.0 * 1024.0) as usize).max(4)
    }

    /// Chunks the model is cut into.
    pub fn chunks(&self) -> usize {
        self.stages * self.chunks_per_rank
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Auto,
    Uniform,
    Parameters,
    /// Layers per stage, in order.
    Manual(Vec<usize>),
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Uniform => "uniform",
            Method::Parameters => "parameters",
            Method::Manual(_) => "manual",
        }
    }
}

/// Where a stage runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub host: usize,
    pub device: usize,
}

impl Topology {
    /// Stage k runs on the k-th device in host order (replica 0's ranks).
    pub fn placements(&self) -> Vec<Placement> {
        let mut all = self.all_placements();
        all.truncate(self.partition.stages);
        all
    }

    /// Every rank's device: rank r (replica r / stages, stage r mod stages) on the r-th device
    /// in host order.
    pub fn all_placements(&self) -> Vec<Placement> {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(h, host)| {
                (0..host.devices.len()).map(move |d| Placement { host: h, device: d })
            })
            .take(self.partition.stages * self.partition.replicas)
            .collect()
    }

    /// Where each chunk runs: chunk c on rank c mod `stages` (one chunk per rank unless
    /// `chunks_per_rank` > 1).
    pub fn chunk_placements(&self) -> Vec<Placement> {
        let ranks = self.placements();
        (0..self.partition.chunks())
            .map(|c| ranks[c % ranks.len()].clone())
            .collect()
    }

    pub fn device(&self, p: &Placement) -> &Device {
        &self.hosts[p.host].devices[p.device]
    }

    /// The compute threads the topology states for the rank at `p` (its device's, else
    /// `[partition] threads`); `None` where nothing is said. A GPU rank states none.
    pub fn threads_stated(&self, p: &Placement) -> Option<usize> {
        let dev = self.device(p);
        match dev.kind {
            DeviceKind::Cpu => dev.threads.or(self.partition.threads),
            DeviceKind::Cuda(_) => None,
        }
    }

    /// The compute threads the rank at `p` is planned with (one where nothing is said).
    pub fn threads(&self, p: &Placement) -> usize {
        self.threads_stated(p).unwrap_or(1)
    }

    /// (bandwidth in Gbit/s, latency in ms) between two hosts.
    pub fn link(&self, a: usize, b: usize) -> (f64, f64) {
        let (na, nb) = (&self.hosts[a].name, &self.hosts[b].name);
        self.links
            .iter()
            .find(|l| {
                (&l.hosts[0] == na && &l.hosts[1] == nb) || (&l.hosts[0] == nb && &l.hosts[1] == na)
            })
            .map(|l| (l.bandwidth_gbps, l.latency_ms))
            .unwrap_or(if a == b {
                INTRA_HOST_LINK
            } else {
                INTER_HOST_LINK
            })
    }

    /// Milliseconds to move `bytes` between two hosts.
    pub fn transfer_ms(&self, a: usize, b: usize, bytes: u64) -> f64 {
        if bytes == 0 {
            return 0.0;
        }
        let (gbps, latency) = self.link(a, b);
        latency + bytes as f64 * 8.0 / (gbps * 1e9) * 1e3
    }

    /// Whether the first layer takes token ids (an embedding) rather than f32 features.
    pub fn token_input(&self) -> bool {
        self.model.token_input()
    }
}
