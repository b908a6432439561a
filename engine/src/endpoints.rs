//! Where each rank listens, from the job plan's edges. An edge carries activations from the
//! rank holding its producer chunk to the rank holding its consumer chunk, and gradients back:
//! the consumer listens for the activations, the producer for the gradients. Ranks on the same
//! host use `ipc://` in the run directory; ranks on different hosts use `tcp://` on the
//! listening host's address, at `port + 2(e+1)` (activations of edge e) and `port + 2e + 1`
//! (gradients of edge e) — for a chain with rank k holding chunk k, that is stage k's
//! `port + 2k` and `port + 2k + 1`, as before plans had edges.

use crate::job::Job;
use brigade_stages::codec::Kind;
use std::path::{Path, PathBuf};

/// The run directory of `run_id` on this host (ipc sockets, pid files, per-rank traces).
pub fn run_dir(run_id: u64) -> PathBuf {
    std::env::temp_dir().join(format!("brigade-{run_id:016x}"))
}

/// Creates (or reuses) the run directory, readable only by this user: its `ipc://` sockets
/// carry tensors without encryption, so nobody else may open them.
pub fn create_run_dir(run_id: u64) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = run_dir(run_id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// One direction of one edge, as the rank that receives it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InLink {
    pub edge: u32,
    pub kind: Kind,
    /// The rank that sends on it.
    pub peer: usize,
    /// Where this rank listens.
    pub endpoint: String,
    /// `[micro-batch, ..]` of every tensor on it.
    pub shape: Vec<usize>,
    /// The largest payload the plan allows on it.
    pub max_bytes: u64,
}

/// One direction of one edge, as the rank that sends on it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutLink {
    pub edge: u32,
    pub kind: Kind,
    /// The rank that receives it.
    pub peer: usize,
    /// Where that rank listens.
    pub endpoint: String,
}

/// Every link of one rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RankLinks {
    pub inbound: Vec<InLink>,
    pub outbound: Vec<OutLink>,
}

/// (sender, receiver) of `kind` on `edge`.
fn ends(job: &Job, edge: usize, kind: Kind) -> (usize, usize) {
    let e = job.ends(edge);
    match kind {
        Kind::Activation => (e.producer, e.consumer),
        Kind::Gradient => (e.consumer, e.producer),
    }
}

fn ipc_path(run_dir: &Path, edge: usize, kind: Kind) -> PathBuf {
    let name = match kind {
        Kind::Activation => "act",
        Kind::Gradient => "grad",
    };
    run_dir.join(format!("e{edge}-{name}.ipc"))
}

/// Where `kind` on `edge` is received. `all_local`: every rank runs on this machine
/// (`brigade train`), so every link is ipc.
pub fn endpoint(job: &Job, edge: usize, kind: Kind, run_dir: &Path, all_local: bool) -> String {
    let (from, to) = ends(job, edge, kind);
    let (pf, pt) = (&job.places[from], &job.places[to]);
    if all_local || pf.host == pt.host {
        format!("ipc://{}", ipc_path(run_dir, edge, kind).display())
    } else {
        let host = &job.topo.hosts[pt.host];
        let offset = match kind {
            Kind::Activation => 2 * (edge + 1),
            Kind::Gradient => 2 * edge + 1,
        };
        format!("tcp://{}:{}", host.address, host.port as usize + offset)
    }
}

/// The links of rank `rank` of `job`.
pub fn links(job: &Job, rank: usize, run_dir: &Path, all_local: bool) -> RankLinks {
    let mut out = RankLinks::default();
    for (e, spec) in job.edges().iter().enumerate() {
        for kind in [Kind::Activation, Kind::Gradient] {
            let (from, to) = ends(job, e, kind);
            let endpoint = endpoint(job, e, kind, run_dir, all_local);
            if to == rank {
                out.inbound.push(InLink {
                    edge: e as u32,
                    kind,
                    peer: from,
                    endpoint: endpoint.clone(),
                    shape: spec.shape.clone(),
                    max_bytes: spec.max_bytes,
                });
            }
            if from == rank {
                out.outbound.push(OutLink {
                    edge: e as u32,
                    kind,
                    peer: to,
                    endpoint,
                });
            }
        }
    }
    out
}

/// The ipc socket files the given ranks listen on (for the launcher to remove).
pub fn ipc_files(job: &Job, ranks: &[usize], run_dir: &Path) -> Vec<PathBuf> {
    (0..job.edges().len())
        .flat_map(|e| [(e, Kind::Activation), (e, Kind::Gradient)])
        .filter(|&(e, kind)| ranks.contains(&ends(job, e, kind).1))
        .map(|(e, kind)| ipc_path(run_dir, e, kind))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::load_input;

    fn job(file: &str) -> Job {
        let path = format!(
            "{}/../topologies/{file}",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        load_input(&path, &[], None).unwrap().0
    }

    #[test]
    fn ipc_on_one_host_tcp_across() {
        let job = job("two-hosts.toml");
        let dir = Path::new("/tmp/brigade-x");
        let l1 = links(&job, 1, dir, false);
        let inbound: Vec<(u32, Kind, usize, &str)> = l1
            .inbound
            .iter()
            .map(|l| (l.edge, l.kind, l.peer, l.endpoint.as_str()))
            .collect();
        // Rank 1 (host a) receives activations from rank 0 (host a) and gradients from rank 2
        // (host b, so on a's address).
        assert_eq!(
            inbound,
            vec![
                (0, Kind::Activation, 0, "ipc:///tmp/brigade-x/e0-act.ipc"),
                (1, Kind::Gradient, 2, "tcp://198.18.0.1:29503"),
            ]
        );
        // It sends activations to rank 2, which listens on b's address.
        let to2 = l1.outbound.iter().find(|l| l.peer == 2).unwrap();
        assert_eq!(
            (to2.edge, to2.kind, to2.endpoint.as_str()),
            (1, Kind::Activation, "tcp://198.18.0.2:29504")
        );
        // Both ends agree on every endpoint.
        let l2 = links(&job, 2, dir, false);
        assert!(
            l2.inbound
                .iter()
                .any(|l| l.kind == Kind::Activation && l.endpoint == to2.endpoint)
        );
        assert_eq!(
            endpoint(&job, 1, Kind::Activation, dir, true),
            "ipc:///tmp/brigade-x/e1-act.ipc"
        );
        assert_eq!(
            ipc_files(&job, &[0, 1], dir),
            vec![
                dir.join("e0-act.ipc"),
                dir.join("e0-grad.ipc"),
                dir.join("e1-grad.ipc")
            ]
        );
    }
}
