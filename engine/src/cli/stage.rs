//! `brigade stage FILE --stage K`: one stage process. Launchers (`train`, `launch`, Slurm,
//! Kubernetes, Spark barrier tasks) start one per stage; it prints JSON events on stdout
//! (`started`, `step`, `done`) and human messages on stderr.

use super::TopologyArgs;
use crate::endpoints::{endpoints, run_dir};
use crate::executor::build::executor_for;
use crate::executor::core::Checkpoints;
use crate::executor::driver::drive;
use crate::identity::{parse_run_id, topology_hash};
use crate::planning::make_plan;
use crate::transport::net::{MIN_SECRET, NetConfig, NetTransport, load_secret};
use anyhow::{Context, Result, bail};
use brigade_partitioner::ConfigError;
use brigade_stages::device::burn_device;
use clap::Args;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: super::CheckpointArgs,
    /// Which stage of the plan to run (0-based).
    #[arg(long)]
    pub stage: usize,
    /// Train until this many steps are done, counting resumed ones (default: train.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Job identity shared by all stages: 16 hex digits, or any name (e.g. a Slurm job id)
    /// hashed with the topology. Default: derived from the topology alone.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Every stage runs on this machine: use ipc:// for every link, whatever the hosts say.
    #[arg(long)]
    pub local: bool,
    /// Seconds a connected peer may stay silent before it counts as lost.
    #[arg(long, default_value_t = 5)]
    pub peer_timeout: u64,
    /// Seconds to wait for the neighbours to start.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Write this stage's trace events (JSON array) here.
    #[arg(long)]
    pub trace_out: Option<String>,
    /// Write this stage's final parameters to DIR/stage-K.safetensors.
    #[arg(long, value_name = "DIR")]
    pub save_params: Option<String>,
    /// File holding the job secret (default: $BRIGADE_SECRET_FILE, then $BRIGADE_SECRET).
    /// Without a secret, stages accept loopback and ipc peers only.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<String>,
    /// Exit when the process with this pid (the launcher) goes away.
    #[arg(long, hide = true)]
    pub launcher_pid: Option<u32>,
}

pub fn run(args: &StageArgs) -> Result<()> {
    if let Some(pid) = args.launcher_pid {
        die_with_launcher(pid);
    }
    let topo = args.topology.load()?;
    let planned = make_plan(topo, None)?;
    let (topo, plan) = (&planned.topo, &planned.plan);
    let k = args.stage;
    let k_total = plan.stages.len();
    if k >= k_total {
        return Err(ConfigError::invalid(
            &topo.file,
            "--stage",
            format!("stage {k} does not exist, the plan has {k_total} stages"),
            format!("Use --stage 0 to {}.", k_total - 1),
        )
        .into());
    }
    let hash = topology_hash(topo);
    let run_id = parse_run_id(hash, args.run_id.as_deref());
    let dir = run_dir(run_id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the run directory {}", dir.display()))?;
    let pid_file = dir.join(format!("stage{k}.pid"));
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let _remove_pid_file = RemoveOnDrop(pid_file);
    let place = &topo.placements()[k];
    let host = &topo.hosts[place.host];
    let device = burn_device(topo.device(place).kind)?;
    let steps = args.steps.unwrap_or(topo.train.steps) as u64;

    let [start, end] = plan.stages[k].layers;
    let mut stage = brigade_stages::Stage::new(topo, k, start..end, &device);
    if args.checkpoint.resume
        && let Some(root) = &args.checkpoint.checkpoint_dir
    {
        match brigade_stages::checkpoint::latest(
            std::path::Path::new(root),
            topo.model.layers.len(),
        ) {
            Some((step, dir)) => {
                brigade_stages::checkpoint::load(&mut stage, &dir, topo.train.seed)?;
                eprintln!("stage {k}: resumed from {} (step {step})", dir.display());
            }
            None => eprintln!("stage {k}: no complete checkpoint in {root}; starting from step 0"),
        }
    }
    let mut exec = executor_for(topo, plan, stage, steps, args.trace_out.is_some());
    if let Some(root) = &args.checkpoint.checkpoint_dir {
        exec = exec.with_checkpoints(Checkpoints {
            dir: root.into(),
            every: args.checkpoint.checkpoint_every,
            train_seed: topo.train.seed,
            data_seed: topo.data.seed,
        });
    }
    let secret = load_secret(args.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let eps = endpoints(topo, k_total, k, &dir, args.local);
    let tcp: Vec<&String> = [&eps.act_in, &eps.grad_in, &eps.act_out, &eps.grad_out]
        .into_iter()
        .flatten()
        .filter(|e| e.starts_with("tcp://"))
        .collect();
    if secret.is_none() && !tcp.is_empty() {
        if let Some(open) = tcp.iter().find(|e| !is_loopback(e)) {
            bail!(
                "stage {k}: {open} is not a loopback address and no job secret is set. Set BRIGADE_SECRET (at least {MIN_SECRET} bytes, e.g. `export BRIGADE_SECRET=$(openssl rand -hex 32)`) or BRIGADE_SECRET_FILE on every host, or pass --secret-file"
            );
        }
        eprintln!("stage {k}: no job secret set: accepting loopback and ipc peers only");
    }
    let cfg = NetConfig {
        stage: k,
        run_id,
        topology_hash: hash,
        endpoints: eps,
        act_in_shape: exec.stage().input_shape().to_vec(),
        grad_in_shape: exec.stage().output_shape().to_vec(),
        device: exec.stage().device().clone(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(args.peer_timeout.max(1)),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        trace: args.trace_out.is_some(),
        secret,
    };
    let mut transport = NetTransport::start(cfg)?;
    event(
        &serde_json::json!({"event": "started", "stage": k, "host": host.name, "pid": std::process::id(), "layers": plan.stages[k].layers, "run_id": format!("{run_id:016x}")}),
    );

    let mut last = Instant::now();
    drive(&mut exec, &mut transport, |step, loss| {
        let now = Instant::now();
        let ms = (now - last).as_secs_f64() * 1e3;
        last = now;
        event(&serde_json::json!({"event": "step", "stage": k, "step": step + 1, "loss": loss, "step_ms": ms}));
    })
    .map_err(|e| anyhow::anyhow!("{e} (host {}, stage {k})", host.name))?;

    let io_events = transport.take_trace();
    let (stage, tracer) = exec.into_parts();
    if let Some(path) = &args.trace_out {
        let mut events = tracer.into_events();
        events.extend(io_events);
        std::fs::write(path, serde_json::to_vec(&events)?)
            .with_context(|| format!("{path}: cannot write the trace"))?;
    }
    if let Some(dir) = &args.save_params {
        crate::params_io::save(&stage, std::path::Path::new(dir))?;
    }
    if stage.step() != steps {
        bail!("stage {k} stopped at step {} of {steps}", stage.step());
    }
    event(&serde_json::json!({"event": "done", "stage": k, "peak_rss_kib": peak_rss_kib()}));
    Ok(())
}

/// This process's peak resident set size (Linux `VmHWM`), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether a `tcp://host:port` endpoint is on the loopback network.
fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Removes a file when the stage ends, however it ends (short of being killed).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn event(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Asks the kernel to kill this process when its parent dies, so a killed launcher leaves no
/// orphans; exits at once if the launcher is already gone.
fn die_with_launcher(launcher: u32) {
    #[cfg(target_os = "linux")]
    unsafe {
        // SAFETY: prctl with PR_SET_PDEATHSIG only changes this process's own signal disposition.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if std::os::unix::process::parent_id() != launcher {
        eprintln!("error: the launcher (pid {launcher}) has already exited");
        std::process::exit(1);
    }
}
