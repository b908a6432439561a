//! One rank's life: load and check the job, build its chunks (resumed from a checkpoint if
//! asked), its executor, data and checkpoint writer, connect its transport, drive the executor
//! to the last step while reporting [`StageEvent`]s on stdout, and write what it was asked to
//! keep (trace, parameters).

use super::identify::{env_rank, rank_of};
use super::options::RankOptions;
use super::peers::{find_peers, is_loopback};
use super::process::{RemoveOnDrop, die_with_launcher, peak_rss_kib};
use crate::cluster_env::EngineContext;
use crate::endpoints::{RankLinks, create_run_dir, links, run_dir};
use crate::events::StageEvent;
use crate::executor::build::{data, program, stages};
use crate::executor::core::{CheckpointPolicy, Executor};
use crate::executor::driver::{DriveError, Progress, drive};
use crate::executor::writer::CheckpointWriter;
use crate::identity::parse_run_id;
use crate::job::{Job, load_input};
use crate::trace::Tracer;
use crate::transport::TransportError;
use crate::transport::net::{JobKeys, MIN_SECRET, NetConfig, NetTransport, load_secret};
use anyhow::{Context, Result, bail};
use brigade_partitioner::ConfigError;
use brigade_stages::Stage;
use brigade_stages::device::training_device;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Runs the rank; a failure is also reported to the launcher as an `error` event.
pub fn run(opts: &RankOptions) -> Result<()> {
    let result = run_rank(opts);
    if let Err(e) = &result {
        StageEvent::Error {
            stage: opts.stage.or_else(env_rank).unwrap_or(0),
            message: format!("{e:#}"),
            bad_input: bad_input(e),
            lost_peer: e.downcast_ref::<LostPeer>().map(|l| l.peer),
        }
        .emit();
    }
    result
}

/// Whether the user must fix a file: a configuration error, or data the reader refused
/// mid-run (a row group is checked when it is read).
fn bad_input(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<ConfigError>() || c.is::<DataRefused>())
}

/// The data reader refused a row group during training.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DataRefused(String);

/// This rank failed because it lost `peer`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct LostPeer {
    peer: usize,
    message: String,
}

/// Who this rank is in which job, and its run directory.
struct Identity {
    job: Job,
    k: usize,
    /// Where `k` came from (`--stage` or the engine's variable).
    rank_key: &'static str,
    engine: Option<EngineContext>,
    run_id: u64,
    dir: PathBuf,
}

fn identify(opts: &RankOptions) -> Result<Identity> {
    let (mut job, _) = load_input(&opts.file, &opts.overrides, None)?;
    if let Some(source) = &opts.plan_source {
        job.file = source.clone();
    }
    let (k, rank_key, engine) = rank_of(opts, &job)?;
    let run_id = parse_run_id(job.hash, opts.run_id.as_deref());
    let dir = create_run_dir(run_id).with_context(|| {
        format!(
            "cannot create the run directory {}",
            run_dir(run_id).display()
        )
    })?;
    Ok(Identity {
        job,
        k,
        rank_key,
        engine,
        run_id,
        dir,
    })
}

fn run_rank(opts: &RankOptions) -> Result<()> {
    if let Some(pid) = opts.launcher_pid {
        die_with_launcher(pid);
    }
    let id = identify(opts)?;
    let (job, k) = (&id.job, id.k);
    let pid_file = id.dir.join(format!("stage{k}.pid"));
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let _remove_pid_file = RemoveOnDrop(pid_file);
    let topo = &job.topo;
    let place = &job.places[k];
    let host = &topo.hosts[place.host].name;
    brigade_stages::device::check_schedule(topo.device(place).kind, topo.train.schedule)?;
    let device = training_device(topo.device(place).kind, topo.train.dtype)?;
    let steps = opts.steps.unwrap_or(topo.train.steps) as u64;
    let engine = id.engine.as_ref().map(|e| e.engine);
    let (threads, home) = super::threads::for_rank(opts, job, k, engine)?;

    let mut chunks = stages(job, k, &device)?;
    resume(opts, job, k, &mut chunks)?;
    let held: Vec<usize> = chunks.iter().map(|s| s.index()).collect();
    let layers = [
        chunks.first().map_or(0, |s| s.layers().start),
        chunks.last().map_or(0, |s| s.layers().end),
    ];
    let (mut exec, writer) = executor(opts, job, k, chunks, steps)?;
    let (mut transport, endpoint) = connect(opts, &id, &exec)?;
    StageEvent::Started {
        stage: k,
        host: host.clone(),
        pid: std::process::id(),
        layers,
        chunks: held,
        run_id: format!("{:016x}", id.run_id),
        job_hash: job.hash_hex(),
        endpoint,
        threads,
    }
    .emit();
    // Pinned only now: the transport's and readers' threads, started above, inherit the
    // affinity of the thread that starts them and stay free to run on any core.
    if let Some(core) = home {
        super::threads::pin_current(core);
    }
    train(&mut exec, &mut transport, writer, job, k, host)?;
    finish(opts, job, k, steps, exec, transport)
}

/// Loads the checkpoint to resume from into `chunks`, when asked to resume.
fn resume(opts: &RankOptions, job: &Job, k: usize, chunks: &mut [Stage]) -> Result<()> {
    let Some(root) = &opts.checkpoint.dir else {
        return Ok(());
    };
    if !(opts.checkpoint.resume || opts.resume_step.is_some()) {
        return Ok(());
    }
    match resume_point(opts, job, k, root)? {
        Some((step, dir)) => {
            for stage in chunks {
                brigade_stages::checkpoint::load(stage, &dir, job.topo.train.seed)?;
            }
            crate::note!("stage {k}: resumed from {} (step {step})", dir.display());
        }
        None => {
            crate::note!("stage {k}: no complete checkpoint in {root}; starting from step 0")
        }
    }
    Ok(())
}

/// The checkpoint to resume: exactly `--resume-step`'s, or the newest complete one.
fn resume_point(
    opts: &RankOptions,
    job: &Job,
    k: usize,
    root: &str,
) -> Result<Option<(u64, PathBuf)>> {
    let root = std::path::Path::new(root);
    let layers = job.topo.model.layers.len();
    match opts.resume_step {
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
}

/// The rank's executor over `chunks`, with its data, and the checkpoint writer if this rank
/// writes checkpoints.
fn executor(
    opts: &RankOptions,
    job: &Job,
    k: usize,
    chunks: Vec<Stage>,
    steps: u64,
) -> Result<(Executor, Option<CheckpointWriter>)> {
    let topo = &job.topo;
    let start_step = chunks.first().map_or(0, |s| s.step());
    let data = data(job, k, start_step)?;
    let mut exec = Executor::new(
        program(job, k),
        chunks,
        data,
        steps,
        Tracer::new(k, 0, opts.trace_out.is_some()),
    );
    let mut writer = None;
    // Replicas hold the same parameters: replica 0 writes the checkpoints.
    if let Some(root) = &opts.checkpoint.dir
        && job.replica_of(k) == 0
    {
        exec = exec.with_checkpoints(CheckpointPolicy {
            every: opts.checkpoint.every,
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
    Ok((exec, writer))
}

/// Finds the peers and starts the transport; returns it with the endpoint this rank listens on.
fn connect(
    opts: &RankOptions,
    id: &Identity,
    exec: &Executor,
) -> Result<(NetTransport, Option<String>)> {
    let (job, k) = (&id.job, id.k);
    let secret = load_secret(opts.secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let keys = secret.as_deref().map(JobKeys::from_secret);
    if keys.is_some() {
        curve_helpers(job, k);
    }
    // The engine may say where rank 0 hosts the rendezvous (flags win).
    let rendezvous = opts.rendezvous.clone().or_else(|| {
        let (host, port) = id.engine.as_ref()?.rendezvous.clone()?;
        (opts.peers.is_empty()).then(|| format!("{host}:{}", port.unwrap_or(opts.rendezvous_port)))
    });
    let (addresses, bind) = find_peers(opts, rendezvous.as_deref(), job, k, id.run_id, &keys)
        .map_err(|e| {
            // Say where the rank number came from: a doubled index is the engine's mistake.
            if id.rank_key == "--stage" {
                e
            } else {
                e.context(format!("rank {k} from {}", id.rank_key))
            }
        })?;
    let mut links = links(job, k, &id.dir, &addresses).map_err(|e| {
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
    check_open(&links, secret.is_some(), k)?;
    let listen_endpoint = links.listen.as_ref().map(|l| l.endpoint.clone());
    let cfg = NetConfig {
        stage: k,
        run_id: id.run_id,
        job_hash: job.hash,
        links,
        // Received tensors land on the chunk's (autodiff) device.
        device: exec.stages()[0].device().clone(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(opts.peer_timeout.max(1)),
        connect_timeout: Duration::from_secs(opts.connect_timeout.max(1)),
        trace: opts.trace_out.is_some(),
        keys,
    };
    Ok((NetTransport::start(cfg)?, listen_endpoint))
}

/// CURVE's helper threads take the cores this host's ranks leave idle (decision 0017), unless
/// `BRIGADE_CURVE_THREADS` says how many.
fn curve_helpers(job: &Job, k: usize) {
    use brigade_wire::zmtp::boxes;
    let host = job.places[k].host;
    let here: Vec<_> = job.places.iter().filter(|p| p.host == host).collect();
    let compute: usize = here.iter().map(|p| job.topo.threads(p)).sum();
    let cores = job.topo.hosts[host]
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Each rank's compute threads and its I/O thread are busy; helpers take what is left.
    let idle = boxes::idle_cores(cores.saturating_sub(compute - here.len()), here.len());
    boxes::set_helpers(boxes::from_env().unwrap_or(idle));
}

/// Without a job secret, TCP links must stay on loopback.
fn check_open(links: &RankLinks, secret: bool, k: usize) -> Result<()> {
    let tcp: Vec<&String> = links
        .listen
        .iter()
        .map(|l| &l.endpoint)
        .chain(links.out.iter().map(|o| &o.endpoint))
        .filter(|e| e.starts_with("tcp://"))
        .collect();
    if !secret && !tcp.is_empty() {
        if let Some(open) = tcp.iter().find(|e| !is_loopback(e)) {
            bail!(
                "stage {k}: {open} is not a loopback address and no job secret is set. Set BRIGADE_SECRET (at least {MIN_SECRET} bytes, e.g. `export BRIGADE_SECRET=$(openssl rand -hex 32)`) or BRIGADE_SECRET_FILE on every host, or pass --secret-file"
            );
        }
        crate::note!("stage {k}: no job secret set: accepting loopback and ipc peers only");
    }
    Ok(())
}

/// Drives the executor to its last step, reporting steps, checkpoints and evaluations.
fn train(
    exec: &mut Executor,
    transport: &mut NetTransport,
    mut writer: Option<CheckpointWriter>,
    job: &Job,
    k: usize,
    host: &str,
) -> Result<()> {
    let mut last = Instant::now();
    drive(exec, transport, |p| {
        match p {
            Progress::Step {
                step,
                loss,
                grad_norm,
            } => {
                let now = Instant::now();
                let step_ms = (now - last).as_secs_f64() * 1e3;
                last = now;
                StageEvent::Step {
                    stage: k,
                    step: step + 1,
                    loss,
                    step_ms,
                    grad_norm,
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
    .map_err(|e| drive_error(e, job, k, host))?;
    if let Some(w) = writer {
        w.finish()
            .map_err(|e| anyhow::anyhow!("stage {k} (host {host}): {e}"))?;
    }
    Ok(())
}

/// What a failed drive means for the user.
fn drive_error(e: DriveError, job: &Job, k: usize, host: &str) -> anyhow::Error {
    match e {
        // The peer was given another plan: bad input, named by the file this rank was given.
        DriveError::Transport(TransportError::OtherPlan { address, why, .. }) => {
            ConfigError::invalid(
                &job.file,
                "job_hash",
                format!("stage {k} (host {host}) refused a connection on {address}: {why}"),
                "Start every rank from the same plan file.",
            )
            .into()
        }
        DriveError::Transport(TransportError::PeerLost { peer, .. }) => LostPeer {
            peer,
            message: format!("{e} (host {host}, stage {k})"),
        }
        .into(),
        DriveError::Exec(crate::executor::core::ExecError::Data { .. }) => {
            DataRefused(format!("{e} (host {host}, stage {k})")).into()
        }
        e => anyhow::anyhow!("{e} (host {host}, stage {k})"),
    }
}

/// Writes the trace and the parameters, and says the rank is done.
fn finish(
    opts: &RankOptions,
    job: &Job,
    k: usize,
    steps: u64,
    exec: Executor,
    mut transport: NetTransport,
) -> Result<()> {
    let io_events = transport.take_trace();
    let done = exec.step();
    let (chunks, tracer) = exec.into_parts();
    if let Some(path) = &opts.trace_out {
        let mut events = tracer.into_events();
        events.extend(io_events);
        std::fs::write(path, serde_json::to_vec(&events)?)
            .with_context(|| format!("{path}: cannot write the trace"))?;
    }
    if let Some(dir) = &opts.save_params {
        // Replica 0's parameters are the job's; other replicas' (the same, after every
        // all-reduce) go beside them, for checking.
        let mut dir = PathBuf::from(dir);
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
