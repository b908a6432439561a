//! `brigade stage FILE --stage K`: one rank's process. Launchers (`train`, `launch`, Slurm,
//! Kubernetes, Spark barrier tasks) start one per rank; it prints [`StageEvent`]s on stdout and
//! human messages on stderr. FILE is a job plan (what launchers hand their stages) or a
//! topology, planned here exactly as `brigade plan` would.

use super::TopologyArgs;
use crate::cluster_env;
use crate::endpoints::{Addresses, create_run_dir, links, run_dir};
use crate::events::StageEvent;
use crate::executor::build::{data, program, stages};
use crate::executor::core::{CheckpointPolicy, Executor};
use crate::executor::driver::{DriveError, Progress, drive};
use crate::executor::writer::CheckpointWriter;
use crate::identity::parse_run_id;
use crate::job::load_input;
use crate::trace::Tracer;
use crate::transport::TransportError;
use crate::transport::net::{JobKeys, MIN_SECRET, NetConfig, NetTransport, load_secret};
use anyhow::{Context, Result, bail};
use brigade_partitioner::ConfigError;
use brigade_stages::device::training_device;
use clap::Args;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub checkpoint: super::CheckpointArgs,
    /// Which rank of the plan to run (0-based; the plan says which chunk it holds). Default:
    /// from the engine's environment (`SLURM_PROCID`, `RANK`, `JOB_COMPLETION_INDEX`).
    #[arg(long, visible_alias = "rank")]
    pub stage: Option<usize>,
    /// Train until this many steps are done, counting resumed ones (default: train.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Job identity shared by all ranks: 16 hex digits, or any name (e.g. a Slurm job id)
    /// hashed with the job plan. Default: derived from the job plan alone.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Every rank runs on this machine: use ipc:// for every link, whatever the hosts say.
    #[arg(long)]
    pub local: bool,
    /// Seconds a connected peer may stay silent before it counts as lost.
    #[arg(long, default_value_t = 5)]
    pub peer_timeout: u64,
    /// Seconds to wait for the peers to start.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Write this rank's trace events (JSON array) here.
    #[arg(long)]
    pub trace_out: Option<String>,
    /// Write this rank's final parameters to DIR/stage-K.safetensors (K: the chunk).
    #[arg(long, value_name = "DIR")]
    pub save_params: Option<String>,
    /// File holding the job secret (default: $BRIGADE_SECRET_FILE, then $BRIGADE_SECRET).
    /// Without a secret, ranks accept loopback and ipc peers only.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<String>,
    /// Exit when the process with this pid (the launcher) goes away.
    #[arg(long, hide = true)]
    pub launcher_pid: Option<u32>,
    /// Find the other ranks at run time through the rendezvous rank 0 hosts at HOST:PORT,
    /// instead of `[[hosts]] address` (this rank listens on a free port of the interface that
    /// reaches HOST).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "peers")]
    pub rendezvous: Option<String>,
    /// Every rank's HOST:PORT, in rank order, from an engine that exchanged them itself (e.g.
    /// Spark's allGather): this rank listens on its own entry's port; no rendezvous.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The rendezvous port when the engine names only rank 0's host (Slurm's first node).
    #[arg(long, value_name = "PORT", default_value_t = 29400)]
    pub rendezvous_port: u16,
    /// The file the user gave the launcher (messages name it rather than the launcher's copy
    /// of the plan in the run directory).
    #[arg(long, hide = true)]
    pub plan_source: Option<String>,
    /// Continue from the checkpoint of exactly this step in --checkpoint-dir (it must be
    /// complete); restart agents pass it so that every rank resumes the same step.
    #[arg(long, value_name = "STEP", requires = "checkpoint_dir")]
    pub resume_step: Option<u64>,
    #[command(flatten)]
    pub restart: super::train::RestartArgs,
    #[command(flatten)]
    pub rounds: super::train::RoundArgs,
    /// With --max-restarts: write one JSON line per step, as `train --metrics` (the agent
    /// running the last rank writes it).
    #[arg(long, requires = "max_restarts")]
    pub metrics: Option<String>,
}

/// Runs the rank; a failure is also reported to the launcher as an `error` event.
pub fn run(args: &StageArgs) -> Result<()> {
    if args.restart.max_restarts > 0 {
        return super::stage_agent::run(args);
    }
    let result = run_rank(args);
    if let Err(e) = &result {
        StageEvent::Error {
            stage: args.stage.or_else(env_rank).unwrap_or(0),
            message: format!("{e:#}"),
            bad_input: e.chain().any(|c| c.is::<ConfigError>()),
            lost_peer: e.downcast_ref::<LostPeer>().map(|l| l.peer),
        }
        .emit();
    }
    result
}

/// This rank failed because it lost `peer`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct LostPeer {
    peer: usize,
    message: String,
}

fn run_rank(args: &StageArgs) -> Result<()> {
    if let Some(pid) = args.launcher_pid {
        die_with_launcher(pid);
    }
    let (mut job, _) = load_input(&args.topology.file, &args.topology.overrides, None)?;
    if let Some(source) = &args.plan_source {
        job.file = source.clone();
    }
    let (k, rank_key, engine) = rank_of(args, &job)?;
    let topo = &job.topo;
    let run_id = parse_run_id(job.hash, args.run_id.as_deref());
    let dir = create_run_dir(run_id).with_context(|| {
        format!(
            "cannot create the run directory {}",
            run_dir(run_id).display()
        )
    })?;
    let pid_file = dir.join(format!("stage{k}.pid"));
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let _remove_pid_file = RemoveOnDrop(pid_file);
    let place = &job.places[k];
    let host = &topo.hosts[place.host];
    brigade_stages::device::check_schedule(topo.device(place).kind, topo.train.schedule)?;
    let device = training_device(topo.device(place).kind, topo.train.dtype)?;
    let steps = args.steps.unwrap_or(topo.train.steps) as u64;

    let mut chunks = stages(&job, k, &device);
    let resume_at = |root: &str| {
        let root = std::path::Path::new(root);
        let layers = topo.model.layers.len();
        match args.resume_step {
            None => Ok(brigade_stages::checkpoint::latest(root, layers)),
            Some(step) => {
                let dir = brigade_stages::checkpoint::step_dir(root, step);
                match brigade_stages::checkpoint::complete(&dir, layers) {
                    Some(s) if s == step => Ok(Some((step, dir))),
                    _ => Err(anyhow::anyhow!(
                        "stage {k}: --resume-step {step}: {} is not a complete checkpoint of this model",
                        dir.display()
                    )),
                }
            }
        }
    };
    if (args.checkpoint.resume || args.resume_step.is_some())
        && let Some(root) = &args.checkpoint.checkpoint_dir
    {
        match resume_at(root)? {
            Some((step, dir)) => {
                for stage in &mut chunks {
                    brigade_stages::checkpoint::load(stage, &dir, topo.train.seed)?;
                }
                crate::note!("stage {k}: resumed from {} (step {step})", dir.display());
            }
            None => {
                crate::note!("stage {k}: no complete checkpoint in {root}; starting from step 0")
            }
        }
    }
    let held: Vec<usize> = chunks.iter().map(|s| s.index()).collect();
    let layers = [
        chunks.first().map_or(0, |s| s.layers().start),
        chunks.last().map_or(0, |s| s.layers().end),
    ];
    let start_step = chunks.first().map_or(0, |s| s.step());
    let data = data(&job, k, start_step)?;
    let mut exec = Executor::new(
        program(&job, k),
        chunks,
        data,
        steps,
        Tracer::new(k, 0, args.trace_out.is_some()),
    );
    let mut writer = None;
    // Replicas hold the same parameters: replica 0 writes the checkpoints.
    if let Some(root) = &args.checkpoint.checkpoint_dir
        && job.replica_of(k) == 0
    {
        exec = exec.with_checkpoints(CheckpointPolicy {
            every: args.checkpoint.checkpoint_every,
            chunks: job.chunks().len(),
            train_seed: topo.train.seed,
            data_seed: topo.data.seed,
        });
        writer = Some(CheckpointWriter::start(root.into(), move |step, dir| {
            StageEvent::Checkpoint {
                stage: k,
                step,
                dir: dir.display().to_string(),
            }
            .emit()
        }));
    }
    let secret = load_secret(args.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    // The engine may say where rank 0 hosts the rendezvous (flags win).
    let rendezvous = args.rendezvous.clone().or_else(|| {
        let (host, port) = engine.as_ref()?.rendezvous.clone()?;
        (args.peers.is_empty()).then(|| format!("{host}:{}", port.unwrap_or(args.rendezvous_port)))
    });
    let (addresses, bind) = find_peers(args, rendezvous.as_deref(), &job, k, run_id, &keys)
        .map_err(|e| {
            // Say where the rank number came from: a doubled index is the engine's mistake.
            if rank_key == "--stage" {
                e
            } else {
                e.context(format!("rank {k} from {rank_key}"))
            }
        })?;
    let mut links = links(&job, k, &dir, &addresses).map_err(|e| {
        ConfigError::invalid(
            &job.file,
            format!("hosts[{}].address", e.host),
            e.to_string(),
            "Set it, or start the ranks with --rendezvous HOST:PORT (or --peers).",
        )
    })?;
    if let (Some(listen), Some(bind)) = (links.listen.as_mut(), bind) {
        listen.endpoint = bind;
    }
    let tcp: Vec<&String> = links
        .listen
        .iter()
        .map(|l| &l.endpoint)
        .chain(links.out.iter().map(|o| &o.endpoint))
        .filter(|e| e.starts_with("tcp://"))
        .collect();
    if secret.is_none() && !tcp.is_empty() {
        if let Some(open) = tcp.iter().find(|e| !is_loopback(e)) {
            bail!(
                "stage {k}: {open} is not a loopback address and no job secret is set. Set BRIGADE_SECRET (at least {MIN_SECRET} bytes, e.g. `export BRIGADE_SECRET=$(openssl rand -hex 32)`) or BRIGADE_SECRET_FILE on every host, or pass --secret-file"
            );
        }
        crate::note!("stage {k}: no job secret set: accepting loopback and ipc peers only");
    }
    let listen_endpoint = links.listen.as_ref().map(|l| l.endpoint.clone());
    let cfg = NetConfig {
        stage: k,
        run_id,
        job_hash: job.hash,
        links,
        // Received tensors land on the chunk's (autodiff) device.
        device: exec.stages()[0].device().clone(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(args.peer_timeout.max(1)),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        trace: args.trace_out.is_some(),
        keys,
    };
    let mut transport = NetTransport::start(cfg)?;
    StageEvent::Started {
        stage: k,
        host: host.name.clone(),
        pid: std::process::id(),
        layers,
        chunks: held,
        run_id: format!("{run_id:016x}"),
        job_hash: job.hash_hex(),
        endpoint: listen_endpoint,
    }
    .emit();

    let mut last = Instant::now();
    drive(&mut exec, &mut transport, |p| {
        match p {
            Progress::Step { step, loss } => {
                let now = Instant::now();
                let step_ms = (now - last).as_secs_f64() * 1e3;
                last = now;
                StageEvent::Step {
                    stage: k,
                    step: step + 1,
                    loss,
                    step_ms,
                }
                .emit();
            }
            Progress::Checkpoint { step, snapshots } => {
                if let Some(w) = writer.as_mut() {
                    w.submit(step, snapshots).map_err(DriveError::Checkpoint)?;
                }
            }
            Progress::Eval { step, figures } => {
                if let Some(f) = figures {
                    StageEvent::Eval {
                        stage: k,
                        step,
                        val_loss: f.loss,
                        val_accuracy: f.accuracy,
                        rows: f.rows,
                    }
                    .emit();
                }
            }
        }
        Ok(())
    })
    .map_err(|e| match e {
        // The peer was given another plan: bad input, named by the file this rank was given.
        DriveError::Transport(TransportError::OtherPlan { address, why, .. }) => {
            ConfigError::invalid(
                &job.file,
                "job_hash",
                format!(
                    "stage {k} (host {}) refused a connection on {address}: {why}",
                    host.name
                ),
                "Start every rank from the same plan file.",
            )
            .into()
        }
        DriveError::Transport(TransportError::PeerLost { peer, .. }) => LostPeer {
            peer,
            message: format!("{e} (host {}, stage {k})", host.name),
        }
        .into(),
        e => anyhow::anyhow!("{e} (host {}, stage {k})", host.name),
    })?;
    if let Some(w) = writer {
        w.finish()
            .map_err(|e| anyhow::anyhow!("stage {k} (host {}): {e}", host.name))?;
    }

    let io_events = transport.take_trace();
    let done = exec.step();
    let (chunks, tracer) = exec.into_parts();
    if let Some(path) = &args.trace_out {
        let mut events = tracer.into_events();
        events.extend(io_events);
        std::fs::write(path, serde_json::to_vec(&events)?)
            .with_context(|| format!("{path}: cannot write the trace"))?;
    }
    if let Some(dir) = &args.save_params {
        // Replica 0's parameters are the job's; other replicas' (the same, after every
        // all-reduce) go beside them, for checking.
        let mut dir = std::path::PathBuf::from(dir);
        if job.replica_of(k) > 0 {
            dir = dir.join(format!("replica-{}", job.replica_of(k)));
        }
        for stage in &chunks {
            crate::params_io::save(stage, &dir)?;
        }
    }
    if done != steps {
        bail!("stage {k} stopped at step {done} of {steps}");
    }
    StageEvent::Done {
        stage: k,
        peak_rss_kib: peak_rss_kib(),
    }
    .emit();
    Ok(())
}

/// This rank's number, where it came from (`--stage` or the engine's variable), and the engine
/// that started the process, if any; checked against the plan (world size, range).
pub(super) fn rank_of(
    args: &StageArgs,
    job: &crate::job::Job,
) -> Result<(usize, &'static str, Option<cluster_env::EngineContext>)> {
    let ranks = job.ranks();
    // An explicit --stage (launchers always give one) means the engine's variables are not
    // ours: `brigade train` inside a Slurm allocation must not read SLURM_NTASKS.
    let from_env = args.stage.is_none();
    let engine = cluster_env::from_env(&|v| {
        if from_env {
            std::env::var(v).ok()
        } else {
            None
        }
    })
    .map_err(|e| {
        ConfigError::invalid(
            "the environment",
            e.var,
            format!("{:?}: {}", e.value, e.why),
            "Fix or unset the variable, or pass --stage.",
        )
    })?;
    let (k, rank_key) = match (args.stage, &engine) {
        (Some(k), _) => (k, "--stage"),
        (None, Some(e)) => (e.rank, e.rank_var),
        (None, None) => {
            return Err(ConfigError::invalid(
                &job.file,
                "--stage",
                "no rank: not given, and no SLURM_PROCID, RANK or JOB_COMPLETION_INDEX in the environment",
                format!("Pass --stage 0 to {}, or start the rank from Slurm, torchrun or a Kubernetes Indexed Job.", ranks - 1),
            )
            .into());
        }
    };
    if let Some((world, var)) = engine.as_ref().and_then(|e| e.world)
        && world != ranks
    {
        return Err(ConfigError::invalid(
            "the environment",
            var,
            format!(
                "{world} ranks were started, but the plan {} has {ranks}",
                job.file
            ),
            format!("Start {ranks} tasks (one per rank), or plan for {world} stages."),
        )
        .into());
    }
    if k >= ranks {
        return Err(ConfigError::invalid(
            &job.file,
            rank_key,
            format!("rank {k} does not exist, the plan has {ranks} ranks"),
            format!("Use ranks 0 to {}.", ranks - 1),
        )
        .into());
    }
    Ok((k, rank_key, engine))
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

/// Without a job secret a rendezvous must stay on loopback (`who`: for the message).
pub(super) fn check_rendezvous(rv: &str, keys: &Option<JobKeys>, who: &str) -> Result<()> {
    if keys.is_none() && !is_loopback(&format!("tcp://{rv}")) {
        bail!(
            "{who}: the rendezvous {rv} is not a loopback address and no job secret is set. Set BRIGADE_SECRET (at least {MIN_SECRET} bytes) or BRIGADE_SECRET_FILE on every host, or pass --secret-file"
        );
    }
    Ok(())
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

/// Removes a file when the rank ends, however it ends (short of being killed).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
        crate::note!("error: the launcher (pid {launcher}) has already exited");
        std::process::exit(1);
    }
}

/// Where every rank listens: from the topology, from `--peers`, or through the rendezvous;
/// and, with the last two, the address this rank binds (its own entry's port on every
/// interface, or the interface that reaches the rendezvous).
fn find_peers(
    args: &StageArgs,
    rendezvous: Option<&str>,
    job: &crate::job::Job,
    k: usize,
    run_id: u64,
    keys: &Option<JobKeys>,
) -> Result<(Addresses, Option<String>)> {
    let ranks = job.ranks();
    if !args.peers.is_empty() {
        if args.peers.len() != ranks {
            return Err(ConfigError::invalid(
                &job.file,
                "--peers",
                format!("{} endpoints for {ranks} ranks", args.peers.len()),
                "Give one HOST:PORT per rank, in rank order.",
            )
            .into());
        }
        let table: Vec<String> = args
            .peers
            .iter()
            .map(|p| format!("tcp://{}", p.trim_start_matches("tcp://")))
            .collect();
        // Bind this rank's own entry; a host name (not an IP) binds every interface.
        let (host, port) = table[k]
            .trim_start_matches("tcp://")
            .rsplit_once(':')
            .unwrap_or(("", ""));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let bind = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("tcp://[{ip}]:{port}"),
            Ok(ip) => format!("tcp://{ip}:{port}"),
            Err(_) => format!("tcp://0.0.0.0:{port}"),
        };
        return Ok((Addresses::Table(table), Some(bind)));
    }
    let Some(rv) = rendezvous else {
        return Ok((
            Addresses::Static {
                all_local: args.local,
            },
            None,
        ));
    };
    check_rendezvous(rv, keys, &format!("stage {k}"))?;
    // The address other ranks reach this one at: the interface that reaches the rendezvous.
    let endpoint =
        crate::launcher::agent::free_endpoint(rv).with_context(|| format!("stage {k}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the rendezvous runtime")?;
    let within = Duration::from_secs(args.connect_timeout.max(1));
    let (run, hash) = (format!("{run_id:016x}"), job.hash_hex());
    let server = if k == 0 {
        // Bind the rendezvous's own address (not every interface): without a job secret that
        // keeps it on loopback.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(rv))
            .with_context(|| {
                format!("stage 0: cannot host the rendezvous at {rv} (is it an address of this machine?)")
            })?;
        let (keys, run, hash) = (keys.clone(), run.clone(), hash.clone());
        Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener.into_std()?)?;
                crate::rendezvous::serve(listener, ranks, &run, &hash, keys, within)
                    .await
                    .map_err(std::io::Error::other)
            })
        }))
    } else {
        None
    };
    let me = crate::rendezvous::Registration {
        rank: k,
        endpoint: endpoint.clone(),
        job_hash: hash,
        run_id: run,
    };
    let table = rt.block_on(crate::rendezvous::register(rv, &me, keys.clone(), within));
    if let Some(s) = server {
        let _ = s.join();
    }
    let table = table.map_err(|e| anyhow::anyhow!("stage {k}: {e}"))?;
    if table.len() != ranks {
        bail!(
            "stage {k}: the rendezvous at {rv} answered {} endpoints for {ranks} ranks",
            table.len()
        );
    }
    crate::note!(
        "stage {k}: found {} ranks through the rendezvous at {rv}; listening on {endpoint}",
        table.len()
    );
    Ok((Addresses::Table(table), Some(endpoint)))
}

/// The rank the engine's environment names, if any (for the error event of a rank that failed
/// before it knew its rank).
fn env_rank() -> Option<usize> {
    cluster_env::from_env(&|v| std::env::var(v).ok())
        .ok()
        .flatten()
        .map(|e| e.rank)
}
