//! Reading a topology file: TOML text → `--set` overrides → key-checked sections → [`Topology`].

use crate::error::{ConfigError, did_you_mean, line_col};
use crate::layers::{KIND_NAMES, LayerKind, kind_keys};
use crate::reader::Section;
use crate::topology::*;
use toml::{Table, Value};

const TOP_KEYS: &[&str] = &[
    "name",
    "model",
    "data",
    "train",
    "hosts",
    "links",
    "partition",
];
const MODEL_KEYS: &[&str] = &["input", "layers", "loss"];
const DATA_KEYS: &[&str] = &["source", "seed"];
const TRAIN_KEYS: &[&str] = &[
    "steps",
    "batch",
    "microbatches",
    "schedule",
    "optimizer",
    "lr",
    "seed",
    "momentum",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
];
const HOST_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "devices",
    "threads",
    "speed_gflops",
    "memory",
];
const DEVICE_KEYS: &[&str] = &["device", "speed_gflops", "memory"];
const LINK_KEYS: &[&str] = &["hosts", "bandwidth_gbps", "latency_ms"];
const PARTITION_KEYS: &[&str] = &["stages", "method", "balance"];

/// Reads and validates the topology at `path`, applying `overrides` (`section.key=value`).
pub fn load(path: &str, overrides: &[String]) -> Result<Topology, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: path.to_string(),
        source,
    })?;
    parse(path, &text, overrides)
}

/// Validates topology `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str, overrides: &[String]) -> Result<Topology, ConfigError> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    for o in overrides {
        apply_override(file, &mut table, o)?;
    }
    build(file, &table)
}

/// Applies one `section.key=value`; the value is read as TOML, or as a string if it is not.
pub fn apply_override(file: &str, table: &mut Table, spec: &str) -> Result<(), ConfigError> {
    let bad = |msg: &str| {
        ConfigError::invalid(
            file,
            format!("--set {spec}"),
            msg,
            "Write overrides as `--set section.key=value`, e.g. `--set train.schedule=1f1b`.",
        )
    };
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| bad("no `=` in the override"))?;
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key in the override"));
    }
    let value = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.trim().to_string()));
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(bad(&format!("`{p}` is not a section"))),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn build(file: &str, table: &Table) -> Result<Topology, ConfigError> {
    let top = Section::new(file, "", table, TOP_KEYS)?;
    let name = top.opt_str("name")?.unwrap_or("unnamed").to_string();
    let empty = Table::new();
    let section = |key: &str, known: &[&str]| -> Result<Section<'_>, ConfigError> {
        let t = top.opt_table(key)?.unwrap_or(&empty);
        Section::new(file, key, t, known)
    };
    let model = model(&section("model", MODEL_KEYS)?)?;
    let data = data(&section("data", DATA_KEYS)?)?;
    let train = train(&section("train", TRAIN_KEYS)?)?;
    let hosts = hosts(&top)?;
    let links = links(&top, &hosts)?;
    let partition = partition(&section("partition", PARTITION_KEYS)?, &model, &hosts)?;
    Ok(Topology {
        file: file.to_string(),
        name,
        model,
        data,
        train,
        hosts,
        links,
        partition,
    })
}

fn model(s: &Section) -> Result<Model, ConfigError> {
    let input = s.usize_list("input")?.ok_or_else(|| {
        s.err(
            "input",
            "missing",
            "Add one sample's shape, e.g. `input = [64]`.",
        )
    })?;
    if input.is_empty() {
        return Err(s.err(
            "input",
            "is empty",
            "Give one sample's shape, e.g. `input = [64]`.",
        ));
    }
    let items = s
        .opt_array("layers")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            s.err(
                "layers",
                "no layers",
                "Add `layers = [ { kind = \"linear\", out = 10 } ]` to [model].",
            )
        })?;
    check_elements(s, "input", &input)?;
    let mut layers = Vec::with_capacity(items.len());
    let mut shape = input.clone();
    for (i, item) in items.iter().enumerate() {
        let path = format!("model.layers[{i}]");
        let Value::Table(t) = item else {
            return Err(s.err(
                &format!("layers[{i}]"),
                format!("expected a table, found `{item}`"),
                "Write each layer as `{ kind = \"relu\" }`.",
            ));
        };
        let layer = layer(s.file, &path, t, i)?;
        if matches!(layer.kind, LayerKind::Embedding { .. }) && i != 0 {
            return Err(ConfigError::invalid(
                s.file,
                format!("{path}.kind"),
                "an embedding can only be the first layer",
                "Move it to the start of model.layers.",
            ));
        }
        shape = layer.kind.output_shape(&shape).map_err(|m| {
            ConfigError::invalid(
                s.file,
                path.clone(),
                format!(
                    "{m} (its input comes from {})",
                    if i == 0 {
                        "model.input".to_string()
                    } else {
                        format!("model.layers[{}]", i - 1)
                    }
                ),
                "Change this layer or the one before it so the shapes match.",
            )
        })?;
        check_elements(s, &format!("layers[{i}]"), &shape)?;
        layers.push(layer);
    }
    let loss = match s.choice("loss", "cross_entropy", &["cross_entropy", "mse"])? {
        "mse" => Loss::Mse,
        _ => Loss::CrossEntropy,
    };
    if loss == Loss::CrossEntropy && shape.len() > 2 {
        return Err(s.err(
            "loss",
            format!("cross_entropy needs an output shaped [classes] or [tokens, vocab], the model ends with {shape:?}"),
            "Add a flatten and a linear layer before the end, or use loss = \"mse\".",
        ));
    }
    Ok(Model {
        input,
        layers,
        loss,
    })
}

/// Refuses samples of more than 2^32 elements (the products in cost estimates stay in range).
fn check_elements(s: &Section, key: &str, shape: &[usize]) -> Result<(), ConfigError> {
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    match n {
        Some(n) if n <= 1 << 32 => Ok(()),
        _ => Err(s.err(
            key,
            format!("one sample of shape {shape:?} is too large"),
            "Use smaller dimensions (at most 2^32 elements per sample).",
        )),
    }
}

fn layer(file: &str, path: &str, t: &Table, index: usize) -> Result<Layer, ConfigError> {
    let kind_val = t.get("kind").ok_or_else(|| {
        ConfigError::invalid(
            file,
            format!("{path}.kind"),
            "missing",
            format!("Give the layer a kind: one of {}.", KIND_NAMES.join(", ")),
        )
    })?;
    let Value::String(kind) = kind_val else {
        return Err(ConfigError::invalid(
            file,
            format!("{path}.kind"),
            format!("expected a string, found `{kind_val}`"),
            "Write it as `kind = \"linear\"`.",
        ));
    };
    if !KIND_NAMES.contains(&kind.as_str()) {
        return Err(ConfigError::invalid(
            file,
            format!("{path}.kind"),
            format!("unknown layer kind \"{kind}\""),
            format!(
                "Use one of: {}.{}",
                KIND_NAMES.join(", "),
                did_you_mean(kind, KIND_NAMES)
            ),
        ));
    }
    let mut known = vec!["kind", "name"];
    known.extend_from_slice(kind_keys(kind));
    let s = Section::new(file, path, t, &known)?;
    let req = |key: &str, ex: &str| -> Result<usize, ConfigError> {
        let v = s.req_u64(key, ex)?;
        s.positive(key, v, "A layer dimension must be at least 1.")
    };
    let opt = |key: &str, default: u64| -> Result<usize, ConfigError> {
        let v = s.u64_or(key, default)?;
        s.positive(key, v, "It must be at least 1.")
    };
    let kind = match kind.as_str() {
        "linear" => LayerKind::Linear {
            out: req("out", "128")?,
            bias: s.opt_bool("bias")?.unwrap_or(true),
        },
        "relu" => LayerKind::Relu,
        "gelu" => LayerKind::Gelu,
        "tanh" => LayerKind::Tanh,
        "sigmoid" => LayerKind::Sigmoid,
        "flatten" => LayerKind::Flatten,
        "layer_norm" => {
            let eps = s.opt_f64("eps")?.unwrap_or(1e-5);
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(s.err(
                    "eps",
                    format!("must be a small positive number, found {eps}"),
                    "Use e.g. 1e-5.",
                ));
            }
            LayerKind::LayerNorm { eps }
        }
        "dropout" => {
            let p = s.opt_f64("p")?.ok_or_else(|| {
                s.err("p", "missing", "Give the drop probability, e.g. `p = 0.1`.")
            })?;
            if !(0.0..1.0).contains(&p) {
                return Err(s.err(
                    "p",
                    format!("must be in [0, 1), found {p}"),
                    "Use a probability such as 0.1.",
                ));
            }
            LayerKind::Dropout { p }
        }
        "conv2d" => LayerKind::Conv2d {
            out: req("out", "16")?,
            kernel: req("kernel", "3")?,
            stride: opt("stride", 1)?,
            padding: s.u64_or("padding", 0)?.min(crate::reader::MAX_DIM) as usize,
        },
        "max_pool2d" | "avg_pool2d" => {
            let kernel = opt("kernel", 2)?;
            let stride = opt("stride", kernel as u64)?;
            if kind == "max_pool2d" {
                LayerKind::MaxPool2d { kernel, stride }
            } else {
                LayerKind::AvgPool2d { kernel, stride }
            }
        }
        "embedding" => LayerKind::Embedding {
            vocab: req("vocab", "256")?,
            dim: req("dim", "64")?,
        },
        "transformer_block" => LayerKind::TransformerBlock {
            heads: req("heads", "4")?,
            ff: req("ff", "256")?,
        },
        _ => unreachable!("checked against KIND_NAMES above"),
    };
    let name = s
        .opt_str("name")?
        .map_or_else(|| format!("{}{index}", kind.name()), str::to_string);
    Ok(Layer { name, kind })
}

fn data(s: &Section) -> Result<Data, ConfigError> {
    let source = s.choice("source", "synthetic", &["synthetic", "parquet"])?;
    if source == "parquet" {
        return Err(s.err(
            "source",
            "\"parquet\" is not supported by this version of brigade",
            "Use source = \"synthetic\".",
        ));
    }
    Ok(Data {
        source: DataSource::Synthetic,
        seed: s.u64_or("seed", 0)?,
    })
}

fn train(s: &Section) -> Result<Train, ConfigError> {
    let steps = s.u64_or("steps", 100)?;
    let steps = s.positive("steps", steps, "Train for at least one step.")?;
    let batch = s.u64_or("batch", 32)?;
    let batch = s.positive("batch", batch, "A batch holds at least one sample.")?;
    let mbs = s.u64_or("microbatches", 1)?;
    let microbatches = s.positive(
        "microbatches",
        mbs,
        "Use at least 1 micro-batch per step (4 × stages is a good start).",
    )?;
    if batch % microbatches != 0 {
        return Err(s.err(
            "batch",
            format!("batch = {batch} is not divisible by microbatches = {microbatches}"),
            format!(
                "Make batch a multiple of microbatches, e.g. batch = {}.",
                batch.div_ceil(microbatches) * microbatches
            ),
        ));
    }
    let schedule = match s.choice("schedule", "gpipe", &["gpipe", "1f1b"])? {
        "1f1b" => ScheduleKind::OneFOneB,
        _ => ScheduleKind::Gpipe,
    };
    let lr = s.opt_f64("lr")?.unwrap_or(0.01);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(s.err(
            "lr",
            format!("must be a positive number, found {lr}"),
            "Use a learning rate such as 0.01.",
        ));
    }
    let unit = |key: &str, default: f64| -> Result<f64, ConfigError> {
        let v = s.opt_f64(key)?.unwrap_or(default);
        if (0.0..1.0).contains(&v) {
            Ok(v)
        } else {
            Err(s.err(
                key,
                format!("must be in [0, 1), found {v}"),
                format!("Use e.g. {default}."),
            ))
        }
    };
    let weight_decay = unit("weight_decay", 0.0)?;
    let optimizer = match s.choice("optimizer", "sgd", &["sgd", "adam"])? {
        "adam" => {
            if s.get("momentum").is_some() {
                return Err(s.err(
                    "momentum",
                    "applies to optimizer = \"sgd\" only",
                    "Remove it, or set beta1 for Adam.",
                ));
            }
            let eps = s.opt_f64("eps")?.unwrap_or(1e-8);
            if !(eps.is_finite() && eps > 0.0) {
                return Err(s.err(
                    "eps",
                    format!("must be positive, found {eps}"),
                    "Use e.g. 1e-8.",
                ));
            }
            Optimizer::Adam {
                beta1: unit("beta1", 0.9)?,
                beta2: unit("beta2", 0.999)?,
                eps,
                weight_decay,
            }
        }
        _ => {
            for key in ["beta1", "beta2", "eps"] {
                if s.get(key).is_some() {
                    return Err(s.err(
                        key,
                        "applies to optimizer = \"adam\" only",
                        "Remove it, or set optimizer = \"adam\".",
                    ));
                }
            }
            Optimizer::Sgd {
                momentum: unit("momentum", 0.0)?,
                weight_decay,
            }
        }
    };
    Ok(Train {
        steps,
        batch,
        microbatches,
        schedule,
        optimizer,
        lr,
        seed: s.u64_or("seed", 0)?,
    })
}

fn hosts(top: &Section) -> Result<Vec<Host>, ConfigError> {
    let file = top.file;
    let items = top.opt_array("hosts")?.filter(|a| !a.is_empty()).ok_or_else(|| {
        top.err("hosts", "no hosts", "Add a `[[hosts]]` table with name, address and devices, e.g. name = \"local\", address = \"127.0.0.1\", devices = [\"cpu\"].")
    })?;
    let mut hosts: Vec<Host> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("hosts[{i}]");
        let Value::Table(t) = item else {
            return Err(top.err(
                &path,
                "expected a table",
                "Write hosts as `[[hosts]]` tables.",
            ));
        };
        let s = Section::new(file, path.clone(), t, HOST_KEYS)?;
        let name = s.req_str("name", "\"local\"")?.to_string();
        if let Some(j) = hosts.iter().position(|h| h.name == name) {
            return Err(s.err(
                "name",
                format!("duplicate host \"{name}\" (also hosts[{j}])"),
                "Give every host a unique name.",
            ));
        }
        let address = s.req_str("address", "\"127.0.0.1\"")?.to_string();
        if address.trim().is_empty() || address.contains(['/', ' ']) {
            return Err(s.err(
                "address",
                format!("\"{address}\" is not a host name or IP address"),
                "Use an address such as \"10.0.0.2\" or \"node1\".",
            ));
        }
        let host_speed = s.opt_f64("speed_gflops")?;
        let host_mem = s.opt_bytes("memory")?;
        let devs = s
            .opt_array("devices")?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                s.err(
                    "devices",
                    "no devices",
                    "List the host's devices, e.g. devices = [\"cpu\", \"cuda:0\"].",
                )
            })?;
        let mut devices = Vec::new();
        for (d, dv) in devs.iter().enumerate() {
            let dpath = format!("{path}.devices[{d}]");
            let (spec, speed, mem) = match dv {
                Value::String(spec) => (spec.as_str(), host_speed, host_mem),
                Value::Table(dt) => {
                    let ds = Section::new(file, dpath.clone(), dt, DEVICE_KEYS)?;
                    (
                        ds.req_str("device", "\"cuda:0\"")?,
                        ds.opt_f64("speed_gflops")?.or(host_speed),
                        ds.opt_bytes("memory")?.or(host_mem),
                    )
                }
                _ => {
                    return Err(ConfigError::invalid(
                        file,
                        dpath,
                        format!("expected a device name, found `{dv}`"),
                        "Use \"cpu\" or \"cuda:N\".",
                    ));
                }
            };
            let kind = parse_device(spec).ok_or_else(|| {
                ConfigError::invalid(
                    file,
                    dpath.clone(),
                    format!("unknown device \"{spec}\""),
                    format!(
                        "Use \"cpu\" or \"cuda:N\" (N = GPU index).{}",
                        did_you_mean(spec, &["cpu", "cuda:0"])
                    ),
                )
            })?;
            let speed_gflops = speed.unwrap_or(match kind {
                DeviceKind::Cpu => DEFAULT_CPU_GFLOPS,
                DeviceKind::Cuda(_) => DEFAULT_CUDA_GFLOPS,
            });
            if !(speed_gflops > 0.0 && speed_gflops.is_finite()) {
                return Err(ConfigError::invalid(
                    file,
                    format!("{dpath}.speed_gflops"),
                    format!("must be positive, found {speed_gflops}"),
                    "Give the device's effective GFLOP/s, e.g. 50.",
                ));
            }
            devices.push(Device {
                kind,
                speed_gflops,
                memory_bytes: mem,
            });
        }
        for (a, da) in devices.iter().enumerate() {
            if let DeviceKind::Cuda(_) = da.kind
                && let Some(b) = devices[..a].iter().position(|db| db.kind == da.kind)
            {
                return Err(ConfigError::invalid(
                    file,
                    format!("{path}.devices[{a}]"),
                    format!("{} is listed twice (also devices[{b}])", da.kind),
                    "List each GPU once.",
                ));
            }
        }
        let threads = match s.opt_u64("threads")? {
            Some(n) => Some(s.positive("threads", n, "Give at least one compute thread.")?),
            None => None,
        };
        let port = s.u64_or("port", DEFAULT_PORT as u64)?;
        let stage_ports = 2 * devices.len() as u64;
        if port == 0 || port + stage_ports > 65_535 {
            return Err(s.err(
                "port",
                format!("{port} leaves no room for {stage_ports} ports"),
                format!("Use a base port between 1024 and {}.", 65_535 - stage_ports),
            ));
        }
        hosts.push(Host {
            name,
            address,
            port: port as u16,
            devices,
            threads,
        });
    }
    Ok(hosts)
}

fn parse_device(spec: &str) -> Option<DeviceKind> {
    match spec {
        "cpu" => Some(DeviceKind::Cpu),
        _ => spec
            .strip_prefix("cuda:")?
            .parse()
            .ok()
            .map(DeviceKind::Cuda),
    }
}

fn links(top: &Section, hosts: &[Host]) -> Result<Vec<Link>, ConfigError> {
    let Some(items) = top.opt_array("links")? else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut links = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("links[{i}]");
        let Value::Table(t) = item else {
            return Err(top.err(
                &path,
                "expected a table",
                "Write links as `[[links]]` tables.",
            ));
        };
        let s = Section::new(top.file, path, t, LINK_KEYS)?;
        let pair: Vec<&str> = s
            .opt_array("hosts")?
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if pair.len() != 2 {
            return Err(s.err(
                "hosts",
                "expected two host names",
                "Write `hosts = [\"a\", \"b\"]` (the same name twice for a link inside one host).",
            ));
        }
        for h in &pair {
            if !names.contains(h) {
                return Err(s.err(
                    "hosts",
                    format!("unknown host \"{h}\""),
                    format!(
                        "Use a name from [[hosts]]: {}.{}",
                        names.join(", "),
                        did_you_mean(h, &names)
                    ),
                ));
            }
        }
        let bandwidth_gbps = s.opt_f64("bandwidth_gbps")?.ok_or_else(|| {
            s.err(
                "bandwidth_gbps",
                "missing",
                "Give the link's bandwidth in Gbit/s, e.g. bandwidth_gbps = 10.",
            )
        })?;
        if !(bandwidth_gbps > 0.0 && bandwidth_gbps.is_finite()) {
            return Err(s.err(
                "bandwidth_gbps",
                format!("must be positive, found {bandwidth_gbps}"),
                "Give the bandwidth in Gbit/s, e.g. 10.",
            ));
        }
        let latency_ms = s.opt_f64("latency_ms")?.unwrap_or(0.0);
        if !(latency_ms >= 0.0 && latency_ms.is_finite()) {
            return Err(s.err(
                "latency_ms",
                format!("must not be negative, found {latency_ms}"),
                "Give the one-way latency in milliseconds, e.g. 0.1.",
            ));
        }
        links.push(Link {
            hosts: [pair[0].to_string(), pair[1].to_string()],
            bandwidth_gbps,
            latency_ms,
        });
    }
    Ok(links)
}

fn partition(s: &Section, model: &Model, hosts: &[Host]) -> Result<Partition, ConfigError> {
    let devices: usize = hosts.iter().map(|h| h.devices.len()).sum();
    let stages = s.u64_or("stages", devices.min(model.layers.len()) as u64)?;
    let stages = s.positive("stages", stages, "A pipeline has at least one stage.")?;
    let layers = model.layers.len();
    if stages > layers {
        return Err(s.err(
            "stages",
            format!("{stages} stages but the model has only {layers} layers"),
            format!("Use at most {layers} stages, or add layers."),
        ));
    }
    if stages > devices {
        return Err(s.err(
            "stages",
            format!("{stages} stages but the hosts list only {devices} devices"),
            "Add devices to [[hosts]] or use fewer stages (one stage per device).",
        ));
    }
    let method = match s.choice(
        "method",
        "auto",
        &["auto", "uniform", "parameters", "manual"],
    )? {
        "manual" => {
            let balance = s.usize_list("balance")?.ok_or_else(|| {
                s.err(
                    "balance",
                    "missing for method = \"manual\"",
                    format!(
                        "List the layers per stage, e.g. balance = [{}].",
                        even_split(layers, stages)
                    ),
                )
            })?;
            if balance.len() != stages {
                return Err(s.err(
                    "balance",
                    format!("has {} entries for {stages} stages", balance.len()),
                    "Give one layer count per stage.",
                ));
            }
            let sum: usize = balance.iter().sum();
            if sum != layers {
                return Err(s.err(
                    "balance",
                    format!("sums to {sum} but the model has {layers} layers"),
                    format!(
                        "Make the counts add up to {layers}, e.g. balance = [{}].",
                        even_split(layers, stages)
                    ),
                ));
            }
            Method::Manual(balance)
        }
        other => {
            if s.get("balance").is_some() {
                return Err(s.err(
                    "balance",
                    format!("is only used with method = \"manual\" (method is \"{other}\")"),
                    "Remove balance, or set method = \"manual\".",
                ));
            }
            match other {
                "uniform" => Method::Uniform,
                "parameters" => Method::Parameters,
                _ => Method::Auto,
            }
        }
    };
    Ok(Partition { stages, method })
}

fn even_split(layers: usize, stages: usize) -> String {
    (0..stages)
        .map(|k| (layers * (k + 1) / stages - layers * k / stages).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
