//! Where each stage listens. Stage k listens on one endpoint per neighbour: activations from
//! k−1 and gradients from k+1. Neighbours on the same host use `ipc://` in the run directory;
//! neighbours on different hosts use `tcp://` on the receiving host's address, at
//! `port + 2k` (activations) and `port + 2k + 1` (gradients).

use brigade_partitioner::Topology;
use std::path::{Path, PathBuf};

/// The run directory of `run_id` on this host (ipc sockets, pid files, per-stage traces).
pub fn run_dir(run_id: u64) -> PathBuf {
    std::env::temp_dir().join(format!("brigade-{run_id:016x}"))
}

/// Endpoints of stage `k` of `stages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEndpoints {
    /// Where this stage receives activations (k > 0).
    pub act_in: Option<String>,
    /// Where this stage receives gradients (k < K − 1).
    pub grad_in: Option<String>,
    /// Where it sends activations: stage k+1's `act_in`.
    pub act_out: Option<String>,
    /// Where it sends gradients: stage k−1's `grad_in`.
    pub grad_out: Option<String>,
}

/// `all_local`: every stage runs on this machine (`brigade train`), so every link is ipc.
pub fn endpoints(
    topo: &Topology,
    stages: usize,
    k: usize,
    run_dir: &Path,
    all_local: bool,
) -> StageEndpoints {
    let places = topo.placements();
    let receiver = |to: usize, from: usize, grad: bool| -> String {
        if all_local || places[to].host == places[from].host {
            let name = if grad { "grad" } else { "act" };
            format!(
                "ipc://{}",
                run_dir.join(format!("stage{to}-{name}.ipc")).display()
            )
        } else {
            let host = &topo.hosts[places[to].host];
            let port = host.port as usize + 2 * to + usize::from(grad);
            format!("tcp://{}:{port}", host.address)
        }
    };
    StageEndpoints {
        act_in: (k > 0).then(|| receiver(k, k - 1, false)),
        grad_in: (k + 1 < stages).then(|| receiver(k, k + 1, true)),
        act_out: (k + 1 < stages).then(|| receiver(k + 1, k, false)),
        grad_out: (k > 0).then(|| receiver(k - 1, k, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_on_one_host_tcp_across() {
        let path = format!(
            "{}/../topologies/two-hosts.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        let topo = brigade_partitioner::load(&path, &[]).unwrap();
        let dir = Path::new("/tmp/brigade-x");
        let e1 = endpoints(&topo, 4, 1, dir, false);
        assert_eq!(
            e1.act_in.as_deref(),
            Some("ipc:///tmp/brigade-x/stage1-act.ipc")
        );
        // Stage 1 (host a) sends to stage 2 (host b): stage 2 listens on b's address.
        assert_eq!(e1.act_out.as_deref(), Some("tcp://198.18.0.2:29504"));
        assert_eq!(e1.grad_in.as_deref(), Some("tcp://198.18.0.1:29503"));
        let e2 = endpoints(&topo, 4, 2, dir, false);
        assert_eq!(e2.act_in, e1.act_out);
        assert_eq!(e2.grad_out, e1.grad_in);
        assert_eq!(
            endpoints(&topo, 4, 1, dir, true).act_out.as_deref(),
            Some("ipc:///tmp/brigade-x/stage2-act.ipc")
        );
    }
}
