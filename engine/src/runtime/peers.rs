//! How a rank finds the others: the topology's addresses, an engine's `--peers` table, or the
//! rendezvous rank 0 hosts; and the rule that without a job secret nothing leaves loopback.

use super::options::RankOptions;
use crate::endpoints::Addresses;
use crate::job::Job;
use crate::transport::net::{JobKeys, MIN_SECRET};
use anyhow::{Context, Result, bail};
use brigade_partitioner::ConfigError;
use std::time::Duration;

/// Where every rank listens: from the topology, from `--peers`, or through the rendezvous;
/// and, with the last two, the address this rank binds (its own entry's port on every
/// interface, or the interface that reaches the rendezvous).
pub fn find_peers(
    opts: &RankOptions,
    rendezvous: Option<&str>,
    job: &Job,
    k: usize,
    run_id: u64,
    keys: &Option<JobKeys>,
) -> Result<(Addresses, Option<String>)> {
    if !opts.peers.is_empty() {
        return peer_table(&opts.peers, job, k);
    }
    let Some(rv) = rendezvous else {
        return Ok((
            Addresses::Static {
                all_local: opts.local,
            },
            None,
        ));
    };
    check_rendezvous(rv, keys, &format!("stage {k}"))?;
    let within = Duration::from_secs(opts.connect_timeout.max(1));
    meet(rv, job, k, run_id, keys, within)
}

/// The table an engine exchanged itself (`--peers`), and this rank's own entry to bind.
fn peer_table(peers: &[String], job: &Job, k: usize) -> Result<(Addresses, Option<String>)> {
    let ranks = job.ranks();
    if peers.len() != ranks {
        return Err(ConfigError::invalid(
            &job.file,
            "--peers",
            format!("{} endpoints for {ranks} ranks", peers.len()),
            "Give one HOST:PORT per rank, in rank order.",
        )
        .into());
    }
    let table: Vec<String> = peers
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
    Ok((Addresses::Table(table), Some(bind)))
}

/// Registers at the rendezvous `rv` (rank 0 hosts it) and returns every rank's endpoint and
/// this rank's own.
fn meet(
    rv: &str,
    job: &Job,
    k: usize,
    run_id: u64,
    keys: &Option<JobKeys>,
    within: Duration,
) -> Result<(Addresses, Option<String>)> {
    let ranks = job.ranks();
    // The address other ranks reach this one at: the interface that reaches the rendezvous.
    let endpoint = free_endpoint(rv).with_context(|| format!("stage {k}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the rendezvous runtime")?;
    let (run, hash) = (format!("{run_id:016x}"), job.hash_hex());
    let server = if k == 0 {
        Some(serve(&rt, rv, ranks, &run, &hash, keys, within)?)
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

/// Rank 0 hosts the rendezvous on a thread until every rank has registered.
fn serve(
    rt: &tokio::runtime::Runtime,
    rv: &str,
    ranks: usize,
    run: &str,
    hash: &str,
    keys: &Option<JobKeys>,
    within: Duration,
) -> Result<std::thread::JoinHandle<std::io::Result<Vec<String>>>> {
    // Bind the rendezvous's own address (not every interface): without a job secret that
    // keeps it on loopback.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(rv))
        .with_context(|| {
            format!(
                "stage 0: cannot host the rendezvous at {rv} (is it an address of this machine?)"
            )
        })?;
    let (keys, run, hash) = (keys.clone(), run.to_string(), hash.to_string());
    Ok(std::thread::spawn(move || {
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
}

/// Without a job secret a rendezvous must stay on loopback (`who`: for the message).
pub fn check_rendezvous(rv: &str, keys: &Option<JobKeys>, who: &str) -> Result<()> {
    if keys.is_none() && !is_loopback(&format!("tcp://{rv}")) {
        bail!(
            "{who}: the rendezvous {rv} is not a loopback address and no job secret is set. Set BRIGADE_SECRET (at least {MIN_SECRET} bytes) or BRIGADE_SECRET_FILE on every host, or pass --secret-file"
        );
    }
    Ok(())
}

/// Whether a `tcp://host:port` endpoint is on the loopback network.
pub fn is_loopback(endpoint: &str) -> bool {
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

/// `tcp://IP:PORT`: a free port on the interface that reaches the rendezvous `rv`.
pub fn free_endpoint(rv: &str) -> Result<String> {
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(rv).and_then(|()| s.local_addr()))
        .with_context(|| format!("cannot find a route to the rendezvous {rv}"))?
        .ip();
    let port = std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .with_context(|| format!("no free port on {ip}"))?
        .port();
    Ok(format!("tcp://{ip}:{port}"))
}
