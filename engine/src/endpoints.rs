//! Where each rank listens, from the job plan. A rank binds one ZeroMQ PULL endpoint that
//! receives every tensor sent to it (all its in-edges, fair-queued across its peers) and
//! connects one PUSH to each rank it sends to. An edge carries activations from the rank
//! holding its producer chunk to the rank holding its consumer chunk, and gradients back.
//! A rank whose senders all run on its host listens on `ipc://` in the run directory;
//! otherwise on `tcp://` at its host's address and `port + r` (rank r) — deterministic, so
//! firewall rules can be written from the topology.

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

/// One kind of tensor a rank receives: on `edge`, from rank `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRoute {
    pub edge: u32,
    pub kind: Kind,
    pub peer: usize,
    /// `[micro-batch, ..]` of every tensor on it.
    pub shape: Vec<usize>,
    /// The largest payload the plan allows on it.
    pub max_bytes: u64,
}

/// The rank's one receiving socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub endpoint: String,
    pub routes: Vec<InRoute>,
}

impl Listen {
    /// The ranks that send to this one, in rank order.
    pub fn peers(&self) -> Vec<usize> {
        let mut p: Vec<usize> = self.routes.iter().map(|r| r.peer).collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

/// A rank this rank sends to, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPeer {
    pub peer: usize,
    pub endpoint: String,
}

/// Every link of one rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RankLinks {
    /// Where it listens, if any rank sends to it.
    pub listen: Option<Listen>,
    /// The ranks it sends to.
    pub out: Vec<OutPeer>,
}

/// Every (edge, kind, sender, receiver) of the job that crosses between ranks (an edge between
/// two chunks of one rank stays inside its process and needs no link): each replica's edges
/// (activations, gradients; validation activations in replica 0, which evaluates), and with
/// several replicas each chunk's ring (kind `reduce`, `edge` = the chunk).
fn traffic(job: &Job) -> impl Iterator<Item = (usize, Kind, usize, usize)> + '_ {
    let edges = (0..job.replicas()).flat_map(move |d| {
        (0..job.edges().len()).flat_map(move |e| {
            let ends = job.ends_in(d, e);
            [
                (e, Kind::Activation, ends.producer, ends.consumer),
                (e, Kind::Gradient, ends.consumer, ends.producer),
                (e, Kind::Eval, ends.producer, ends.consumer),
            ]
            .into_iter()
            .filter(move |&(_, kind, _, _)| kind != Kind::Eval || (d == 0 && job.evaluates()))
        })
    });
    let replicas = job.replicas();
    let rings = (0..job.chunks().len())
        .filter(move |_| replicas > 1)
        .flat_map(move |c| {
            let ring = job.chunk_ring(c);
            (0..replicas).map(move |i| (c, Kind::Reduce, ring[i], ring[(i + 1) % replicas]))
        });
    // `clip_grad_norm` over several ranks: one ring over every rank (id: one past the chunks).
    let ranks = job.ranks();
    let norm = (0..ranks)
        .filter(move |_| job.topo.train.clip_grad_norm.is_some() && ranks > 1)
        .map(move |r| (job.chunks().len(), Kind::Reduce, r, (r + 1) % ranks));
    // Tied embeddings: the ranks holding the embedding and the head, in each replica (id: two
    // past the chunks).
    let tie = job.topo.model.tied_layers().into_iter().flat_map(move |_| {
        (0..job.replicas()).flat_map(move |d| {
            let r = &job.chunk_ranks[d];
            let (e, h) = (r[0], r[r.len() - 1]);
            let id = job.chunks().len() + 1;
            [(id, Kind::Reduce, e, h), (id, Kind::Reduce, h, e)]
        })
    });
    edges
        .chain(rings)
        .chain(norm)
        .chain(tie)
        .filter(|&(_, _, from, to)| from != to)
}

/// The largest all-reduce segment of chunk `c` (a ring's share of its gradients, the loss and
/// padding, or a whole bucket two replicas swap), values;
/// for `c` one past the chunks, of the gradient norm's ring (four values a layer); two past,
/// of the tied weight's gradient.
pub fn reduce_segment(job: &Job, c: usize) -> usize {
    if c == job.chunks().len() {
        return (4 * job.topo.model.graph().len()).div_ceil(job.ranks()) + 1;
    }
    if c == job.chunks().len() + 1 {
        // The tied weight's gradient between two ranks.
        let weight = job.topo.model.graph().layer(0).cost.params as usize;
        return ring_segment(weight, 2) + 1;
    }
    let graph = job.topo.model.graph();
    let [a, b] = job.chunks()[c].layers;
    let params: u64 = (a..b).map(|l| graph.layer(l).cost.params).sum();
    let values = params as usize + 2;
    let ring = ring_segment(values, job.replicas()) + 1;
    // Two replicas swap small buckets whole (`Algo::choose`).
    let swap = if job.replicas() == 2 {
        values.min(crate::allreduce::DIRECT_MAX_BYTES / 4)
    } else {
        0
    };
    ring.max(swap)
}

/// The largest segment a ring of `members` sends for any buffer of up to `values` values: a
/// ring's share, cut into lanes of segments of at most [`crate::allreduce::SEGMENT_VALUES`] (more only
/// where a buffer has more than [`crate::allreduce::MAX_LANES`] lanes' worth).
fn ring_segment(values: usize, members: usize) -> usize {
    use crate::allreduce::{MAX_LANES, SEGMENT_VALUES};
    let members = members.max(1);
    values
        .div_ceil(members)
        .min(SEGMENT_VALUES)
        .max(values.div_ceil(members * MAX_LANES))
}

fn ipc_path(run_dir: &Path, rank: usize) -> PathBuf {
    run_dir.join(format!("rank{rank}.ipc"))
}

/// Where every rank listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// From the topology: `ipc://` in the run directory for a rank whose senders share its
    /// host (every rank when `all_local`), else `tcp://` at its host's address and port + rank.
    Static { all_local: bool },
    /// Found at run time (rendezvous, `--peers`): rank r's endpoint is the r-th.
    Table(Vec<String>),
}

/// A host without an address, when a rank on it must be reached over TCP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "hosts[{host}] (\"{name}\") has no address, and rank {rank} there must be reached over TCP"
)]
pub struct NoAddress {
    pub host: usize,
    pub name: String,
    pub rank: usize,
}

/// Where rank `rank` listens.
pub fn endpoint(
    job: &Job,
    rank: usize,
    run_dir: &Path,
    addresses: &Addresses,
) -> Result<String, NoAddress> {
    let all_local = match addresses {
        Addresses::Table(t) => {
            return t.get(rank).cloned().ok_or_else(|| NoAddress {
                host: job.places[rank].host,
                name: job.topo.hosts[job.places[rank].host].name.clone(),
                rank,
            });
        }
        Addresses::Static { all_local } => *all_local,
    };
    let host = job.places[rank].host;
    let local = all_local
        || traffic(job)
            .filter(|&(_, _, _, to)| to == rank)
            .all(|(_, _, from, _)| job.places[from].host == host);
    if local {
        return Ok(format!("ipc://{}", ipc_path(run_dir, rank).display()));
    }
    let h = &job.topo.hosts[host];
    match &h.address {
        Some(a) => Ok(format!("tcp://{a}:{}", h.port as usize + rank)),
        None => Err(NoAddress {
            host,
            name: h.name.clone(),
            rank,
        }),
    }
}

/// The links of rank `rank` of `job`.
pub fn links(
    job: &Job,
    rank: usize,
    run_dir: &Path,
    addresses: &Addresses,
) -> Result<RankLinks, NoAddress> {
    let routes: Vec<InRoute> = traffic(job)
        .filter(|&(_, _, _, to)| to == rank)
        .map(|(e, kind, from, _)| match kind {
            Kind::Reduce => {
                let n = reduce_segment(job, e);
                InRoute {
                    edge: e as u32,
                    kind,
                    peer: from,
                    shape: vec![1, n],
                    max_bytes: n as u64 * 4,
                }
            }
            _ => InRoute {
                edge: e as u32,
                kind,
                peer: from,
                shape: job.edges()[e].shape.clone(),
                max_bytes: job.edges()[e].max_bytes,
            },
        })
        .collect();
    let listen = match routes.is_empty() {
        true => None,
        false => Some(Listen {
            endpoint: endpoint(job, rank, run_dir, addresses)?,
            routes,
        }),
    };
    let mut to: Vec<usize> = traffic(job)
        .filter(|&(_, _, from, _)| from == rank)
        .map(|(_, _, _, to)| to)
        .collect();
    to.sort_unstable();
    to.dedup();
    Ok(RankLinks {
        listen,
        out: to
            .into_iter()
            .map(|peer| {
                Ok(OutPeer {
                    peer,
                    endpoint: endpoint(job, peer, run_dir, addresses)?,
                })
            })
            .collect::<Result<_, NoAddress>>()?,
    })
}

/// The ipc socket files the given ranks listen on (for the launcher to remove).
pub fn ipc_files(ranks: &[usize], run_dir: &Path) -> Vec<PathBuf> {
    ranks.iter().map(|&r| ipc_path(run_dir, r)).collect()
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
    fn one_endpoint_per_rank_ipc_on_one_host_tcp_across() {
        let job = job("two-hosts.toml");
        let dir = Path::new("/tmp/brigade-x");
        // Ranks 0 and 1 on host a, 2 and 3 on host b; rank 1 hears from 0 (host a) and 2 (b).
        let fixed = Addresses::Static { all_local: false };
        let l1 = links(&job, 1, dir, &fixed).unwrap();
        let listen = l1.listen.unwrap();
        assert_eq!(listen.endpoint, "tcp://198.18.0.1:29501");
        assert_eq!(listen.peers(), vec![0, 2]);
        let routes: Vec<(u32, Kind, usize)> = listen
            .routes
            .iter()
            .map(|r| (r.edge, r.kind, r.peer))
            .collect();
        assert_eq!(
            routes,
            vec![(0, Kind::Activation, 0), (1, Kind::Gradient, 2)]
        );
        // Rank 0 hears only from rank 1, on its own host: ipc.
        assert_eq!(
            links(&job, 0, dir, &fixed)
                .unwrap()
                .listen
                .unwrap()
                .endpoint,
            "ipc:///tmp/brigade-x/rank0.ipc"
        );
        // Rank 1 sends to 0 and 2, where they listen.
        let out: Vec<(usize, &str)> = l1
            .out
            .iter()
            .map(|o| (o.peer, o.endpoint.as_str()))
            .collect();
        assert_eq!(
            out,
            vec![
                (0, "ipc:///tmp/brigade-x/rank0.ipc"),
                (2, "tcp://198.18.0.2:29502")
            ]
        );
        assert_eq!(
            endpoint(&job, 2, dir, &Addresses::Static { all_local: true }).unwrap(),
            "ipc:///tmp/brigade-x/rank2.ipc"
        );
        let table = Addresses::Table((0..4).map(|r| format!("tcp://n{r}:7000")).collect());
        assert_eq!(
            links(&job, 1, dir, &table).unwrap().out[1].endpoint,
            "tcp://n2:7000"
        );
    }

    #[test]
    fn clipping_on_several_ranks_rings_every_rank_for_the_norm() {
        let path = format!(
            "{}/../topologies/two-hosts.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        let job = load_input(&path, &["train.clip_grad_norm=1.0".into()], None)
            .unwrap()
            .0;
        let norm = job.chunks().len() as u32;
        let dir = Path::new("/tmp/brigade-x");
        let fixed = Addresses::Static { all_local: true };
        for rank in 0..job.ranks() {
            let l = links(&job, rank, dir, &fixed).unwrap();
            let from: Vec<(usize, Vec<usize>)> = l
                .listen
                .unwrap()
                .routes
                .iter()
                .filter(|r| r.edge == norm && r.kind == Kind::Reduce)
                .map(|r| (r.peer, r.shape.clone()))
                .collect();
            let previous = (rank + job.ranks() - 1) % job.ranks();
            let layers = job.topo.model.graph().len();
            let segment = (4 * layers).div_ceil(job.ranks()) + 1;
            assert_eq!(from, vec![(previous, vec![1, segment])], "rank {rank}");
            assert!(l.out.iter().any(|o| o.peer == (rank + 1) % job.ranks()));
        }
        // Without clipping, no such ring.
        let plain = self::job("two-hosts.toml");
        let l = links(&plain, 0, dir, &fixed).unwrap();
        assert!(
            !l.listen
                .unwrap()
                .routes
                .iter()
                .any(|r| r.kind == Kind::Reduce)
        );
    }
}
