//! What makes two stage processes parts of the same job: the topology they read (hashed) and a
//! run id. Peers with a different hash or run id are refused at the handshake.

use brigade_partitioner::Topology;
use sha2::{Digest, Sha256};

/// SHA-256 (first 8 bytes) of the validated topology with every override applied — but not of
/// the file's name (nor the directory relative data paths are read from), so hosts may keep
/// the file at different paths.
pub fn topology_hash(topo: &Topology) -> u64 {
    let mut t = topo.clone();
    t.file.clear();
    t.data.set_base("");
    let json = serde_json::to_vec(&t).expect("a topology always serialises");
    let digest = Sha256::digest(&json);
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The run id launchers on different hosts agree on without talking: derived from the topology
/// hash and an optional user-chosen job name (`--run-id`, e.g. a Slurm job id).
pub fn derived_run_id(topology_hash: u64, job: Option<&str>) -> u64 {
    let mut h = Sha256::new();
    h.update(topology_hash.to_le_bytes());
    h.update(job.unwrap_or("").as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Reads `--run-id` as hex (what `train` passes to its stages) or derives one from a job name.
pub fn parse_run_id(topology_hash: u64, arg: Option<&str>) -> u64 {
    match arg {
        Some(s) if s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            u64::from_str_radix(s, 16).expect("16 hex digits")
        }
        other => derived_run_id(topology_hash, other),
    }
}

/// A fresh random run id (for `train`, whose stages are all its own children).
pub fn fresh_run_id() -> u64 {
    // Unique per launch on this host: clock and process id; no secrecy is needed here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_the_path_but_not_overrides() {
        let path = format!(
            "{}/../topologies/quickstart.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        let a = brigade_partitioner::load(&path, &[]).unwrap();
        let mut b = a.clone();
        b.file = "elsewhere.toml".into();
        assert_eq!(topology_hash(&a), topology_hash(&b));
        let c = brigade_partitioner::load(&path, &["train.lr=0.5".into()]).unwrap();
        assert_ne!(topology_hash(&a), topology_hash(&c));
    }

    #[test]
    fn run_ids() {
        assert_eq!(parse_run_id(1, Some("00000000000000ff")), 255);
        assert_eq!(
            parse_run_id(1, Some("slurm-42")),
            derived_run_id(1, Some("slurm-42"))
        );
        assert_ne!(derived_run_id(1, Some("a")), derived_run_id(1, Some("b")));
        assert_ne!(derived_run_id(1, None), derived_run_id(2, None));
    }
}
