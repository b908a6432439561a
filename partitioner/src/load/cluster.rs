//! The `[[hosts]]`, `[[links]]` and `[partition]` sections.

use crate::error::{ConfigError, did_you_mean};
use crate::reader::Section;
use crate::topology::*;
use brigade_schedules::Needs;
use toml::Value;

const HOST_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "devices",
    "threads",
    "speed_gflops",
    "memory",
];
const DEVICE_KEYS: &[&str] = &["device", "speed_gflops", "memory", "threads"];
const LINK_KEYS: &[&str] = &["hosts", "bandwidth_gbps", "latency_ms"];
pub(super) const PARTITION_KEYS: &[&str] = &[
    "stages",
    "method",
    "balance",
    "chunks_per_rank",
    "replicas",
    "threads",
    "bucket_mb",
];

pub(super) fn hosts(top: &Section) -> Result<Vec<Host>, ConfigError> {
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
        let s = Section::new(top.file, path, t, HOST_KEYS)?;
        let name = s.req_str("name", "\"local\"")?.to_string();
        if let Some(j) = hosts.iter().position(|h| h.name == name) {
            return Err(s.err(
                "name",
                format!("duplicate host \"{name}\" (also hosts[{j}])"),
                "Give every host a unique name.",
            ));
        }
        hosts.push(host(&s, name)?);
    }
    Ok(hosts)
}

/// One `[[hosts]]` table, named `name`.
fn host(s: &Section, name: String) -> Result<Host, ConfigError> {
    // Optional: without it, ranks on this host find each other at run time (`stage
    // --rendezvous` or `--peers`).
    let address = s.opt_str("address")?.map(str::to_string);
    if let Some(address) = &address
        && (address.trim().is_empty() || address.contains(['/', ' ']))
    {
        return Err(s.err(
            "address",
            format!("\"{address}\" is not a host name or IP address"),
            "Use an address such as \"10.0.0.2\" or \"node1\", or leave it out and start the ranks with --rendezvous.",
        ));
    }
    let devices = devices(s)?;
    // A GPU listed more than once is shared by those ranks, as "cpu" listed twice shares the
    // host's cores: each entry's `memory_gb` is that rank's share of the GPU's memory.
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
    Ok(Host {
        name,
        address,
        port: port as u16,
        devices,
        threads,
    })
}

/// A host's `devices`: names, or tables with their own speed and memory (defaulting to the
/// host's).
fn devices(s: &Section) -> Result<Vec<Device>, ConfigError> {
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
        let dpath = format!("{}.devices[{d}]", s.path);
        let (spec, speed, mem, threads) = match dv {
            Value::String(spec) => (spec.as_str(), host_speed, host_mem, None),
            Value::Table(dt) => {
                let ds = Section::new(s.file, dpath.clone(), dt, DEVICE_KEYS)?;
                let threads = match ds.opt_u64("threads")? {
                    Some(n) => Some(ds.positive("threads", n, "Give at least one thread.")?),
                    None => None,
                };
                (
                    ds.req_str("device", "\"cuda:0\"")?,
                    ds.opt_f64("speed_gflops")?.or(host_speed),
                    ds.opt_bytes("memory")?.or(host_mem),
                    threads,
                )
            }
            _ => {
                return Err(ConfigError::invalid(
                    s.file,
                    dpath,
                    format!("expected a device name, found `{dv}`"),
                    "Use \"cpu\" or \"cuda:N\".",
                ));
            }
        };
        let mut dev = device(s.file, &dpath, spec, speed, mem)?;
        dev.threads = match (dev.threads, threads) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::invalid(
                    s.file,
                    format!("{dpath}.threads"),
                    format!("{b} threads, but the device \"{spec}\" says {a}"),
                    "Say the thread count once: \"cpu:T\" or threads = T.",
                ));
            }
            (a, b) => a.or(b),
        };
        if dev.threads.is_some() && dev.kind != DeviceKind::Cpu {
            return Err(ConfigError::invalid(
                s.file,
                format!("{dpath}.threads"),
                format!("threads on the GPU device \"{spec}\""),
                "Threads per rank are for CPU devices (\"cpu:T\"); leave them out for a GPU.",
            ));
        }
        devices.push(dev);
    }
    Ok(devices)
}

/// The device `spec` at `dpath` with its speed (or the kind's default) and memory.
fn device(
    file: &str,
    dpath: &str,
    spec: &str,
    speed: Option<f64>,
    memory_bytes: Option<u64>,
) -> Result<Device, ConfigError> {
    let (kind, threads) = DeviceKind::parse_spec(spec).ok_or_else(|| {
        ConfigError::invalid(
            file,
            dpath,
            format!("unknown device \"{spec}\""),
            format!(
                "Use \"cpu\", \"cpu:T\" (T compute threads) or \"cuda:N\" (N = GPU index).{}",
                did_you_mean(spec, &["cpu", "cpu:2", "cuda:0"])
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
    Ok(Device {
        kind,
        speed_gflops,
        memory_bytes,
        threads,
    })
}

pub(super) fn links(top: &Section, hosts: &[Host]) -> Result<Vec<Link>, ConfigError> {
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

pub(super) fn partition(
    s: &Section,
    model: &Model,
    hosts: &[Host],
    train: &Train,
) -> Result<Partition, ConfigError> {
    let devices: usize = hosts.iter().map(|h| h.devices.len()).sum();
    let needs = train.schedule.needs();
    let v = chunks_per_rank(s, train, needs)?;
    let replicas_auto = matches!(s.get("replicas"), Some(toml::Value::String(a)) if a == "auto");
    let replicas = if replicas_auto {
        1
    } else {
        replicas(s, train)?
    };
    let layers = model.layers.len();
    let default_stages = (devices / replicas).min(layers / v).max(1);
    let stages = s.u64_or("stages", default_stages as u64)?;
    let stages = s.positive("stages", stages, "A pipeline has at least one stage.")?;
    if stages * v > layers {
        return Err(s.err(
            if v > 1 { "chunks_per_rank" } else { "stages" },
            format!(
                "{stages} stages × {v} chunks per rank = {} chunks but the model has only {layers} layers",
                stages * v
            ),
            format!("Use at most {layers} chunks in all, or add layers."),
        ));
    }
    let per_replica = train.microbatches / replicas;
    if needs.microbatches_multiple_of_ranks && !per_replica.is_multiple_of(stages) {
        return Err(s.err(
            "stages",
            format!(
                "{stages} stages, and interleaved 1F1B needs each replica's micro-batches ({per_replica}) to be a multiple of the stages",
            ),
            format!(
                "Use e.g. train.microbatches = {} (and a batch divisible by it).",
                per_replica.div_ceil(stages) * stages * replicas
            ),
        ));
    }
    check_devices(s, stages, replicas, devices)?;
    let (threads, threads_auto) = threads(s)?;
    Ok(Partition {
        stages,
        method: method(s, layers, stages, v)?,
        chunks_per_rank: v,
        replicas,
        replicas_auto,
        stages_given: s.get("stages").is_some(),
        threads,
        threads_auto,
        bucket_mb: bucket_mb(s)?,
    })
}

/// `[partition] bucket_mb`: the size of the gradient buckets replicas sum while the rest of the
/// gradients are still being made (PyTorch DDP's default, 25 MiB, when absent).
fn bucket_mb(s: &Section) -> Result<f64, ConfigError> {
    let v = s.opt_f64("bucket_mb")?.unwrap_or(DEFAULT_BUCKET_MB);
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(s.err(
            "bucket_mb",
            format!("must be a positive size in MiB, found {v}"),
            format!("Use e.g. {DEFAULT_BUCKET_MB} (smaller buckets start sooner, larger ones cost fewer messages)."),
        ))
    }
}

/// `[partition] threads`: compute threads of each CPU rank whose device does not say, or
/// "auto" (the planner chooses within each host's cores).
fn threads(s: &Section) -> Result<(Option<usize>, bool), ConfigError> {
    if matches!(s.get("threads"), Some(toml::Value::String(a)) if a == "auto") {
        return Ok((None, true));
    }
    match s.opt_u64("threads")? {
        Some(n) => Ok((
            Some(s.positive("threads", n, "Give at least one thread, or \"auto\".")?),
            false,
        )),
        None => Ok((None, false)),
    }
}

/// `chunks_per_rank`: the schedule's default, and more than one only where the schedule runs
/// several chunks per rank.
fn chunks_per_rank(s: &Section, train: &Train, needs: Needs) -> Result<usize, ConfigError> {
    let v = s.u64_or("chunks_per_rank", needs.default_chunks_per_rank as u64)?;
    let v = s.positive("chunks_per_rank", v, "A rank holds at least one chunk.")?;
    if v > 1 && !needs.round_robin_chunks {
        return Err(s.err(
            "chunks_per_rank",
            format!(
                "is {v}, but only schedule = \"interleaved-1f1b\" runs several chunks per rank (train.schedule is \"{}\")",
                train.schedule.name()
            ),
            "Set train.schedule = \"interleaved-1f1b\", or remove chunks_per_rank.",
        ));
    }
    Ok(v)
}

/// A written replica count, which must split each step's micro-batches evenly.
fn replicas(s: &Section, train: &Train) -> Result<usize, ConfigError> {
    let r = s.u64_or("replicas", 1)?;
    let replicas = s.positive(
        "replicas",
        r,
        "Train at least one copy of the pipeline, or write replicas = \"auto\".",
    )?;
    if !train.microbatches.is_multiple_of(replicas) {
        return Err(s.err(
            "replicas",
            format!(
                "{replicas} replicas, but train.microbatches = {} does not split evenly between them (each replica trains on whole micro-batches of every step)",
                train.microbatches
            ),
            format!(
                "Use a multiple of {replicas} micro-batches, e.g. train.microbatches = {}.",
                train.microbatches.div_ceil(replicas) * replicas
            ),
        ));
    }
    Ok(replicas)
}

/// One rank per device.
fn check_devices(
    s: &Section,
    stages: usize,
    replicas: usize,
    devices: usize,
) -> Result<(), ConfigError> {
    if stages * replicas <= devices {
        return Ok(());
    }
    let (key, what) = if replicas > 1 {
        (
            "replicas",
            format!(
                "{stages} stages × {replicas} replicas = {} ranks",
                stages * replicas
            ),
        )
    } else {
        ("stages", format!("{stages} stages"))
    };
    Err(s.err(
        key,
        format!("{what} but the hosts list only {devices} devices"),
        "Add devices to [[hosts]] or use fewer stages or replicas (one rank per device).",
    ))
}

/// `method`, with `balance` for a manual split of `layers` into `stages × v` chunks.
fn method(s: &Section, layers: usize, stages: usize, v: usize) -> Result<Method, ConfigError> {
    let other = s.choice(
        "method",
        "auto",
        &["auto", "uniform", "parameters", "manual"],
    )?;
    if other == "manual" {
        return manual_balance(s, layers, stages, v).map(Method::Manual);
    }
    if s.get("balance").is_some() {
        return Err(s.err(
            "balance",
            format!("is only used with method = \"manual\" (method is \"{other}\")"),
            "Remove balance, or set method = \"manual\".",
        ));
    }
    Ok(match other {
        "uniform" => Method::Uniform,
        "parameters" => Method::Parameters,
        _ => Method::Auto,
    })
}

/// `balance`: layers per chunk, every chunk at least one, adding up to the model.
fn manual_balance(
    s: &Section,
    layers: usize,
    stages: usize,
    v: usize,
) -> Result<Vec<usize>, ConfigError> {
    let chunks = stages * v;
    let balance = s.usize_list("balance")?.ok_or_else(|| {
        s.err(
            "balance",
            "missing for method = \"manual\"",
            format!(
                "List the layers per chunk, e.g. balance = [{}].",
                even_split(layers, chunks)
            ),
        )
    })?;
    if balance.len() != chunks {
        return Err(s.err(
            "balance",
            format!(
                "has {} entries for {chunks} chunks ({stages} stages × {v} per rank)",
                balance.len()
            ),
            "Give one layer count per chunk.",
        ));
    }
    if balance.contains(&0) {
        return Err(s.err(
            "balance",
            "has a chunk of 0 layers",
            "Give every chunk at least one layer.",
        ));
    }
    let sum: usize = balance.iter().sum();
    if sum != layers {
        return Err(s.err(
            "balance",
            format!("sums to {sum} but the model has {layers} layers"),
            format!(
                "Make the counts add up to {layers}, e.g. balance = [{}].",
                even_split(layers, chunks)
            ),
        ));
    }
    Ok(balance)
}

fn even_split(layers: usize, stages: usize) -> String {
    (0..stages)
        .map(|k| (layers * (k + 1) / stages - layers * k / stages).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
