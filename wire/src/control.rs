//! Control frames: single-frame brigade messages; today the bye that closes a link (opening
//! and keeping alive are ZMTP's READY and PING). Tensor messages are two frames (header +
//! payload), so the frame count tells them apart.

use serde::{Deserialize, Serialize};

/// Identifies brigade frames ("BRGD"): the same magic as a tensor message's header
/// (`brigade_stages::codec::MAGIC`; the engine does not build if they differ).
pub const MAGIC: u32 = 0x4252_4744;
/// brigade's protocol version, the same as a tensor header's (`brigade_stages::codec::VERSION`):
/// bump both together. 2: all-reduce segments travel in lanes, their tag `bucket << 40 |
/// lane << 24 | ring step` (issue 28).
pub const VERSION: u16 = 2;

const OTHER_PLAN: &str = "peer runs a different job plan";

/// Why a control frame does not belong here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// A brigade of this job's run with another plan: the user gave the ranks different files.
    #[error("{0}")]
    Plan(String),
    /// Anything else: not brigade, another version, another run, the wrong rank.
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlKind {
    /// Kept alive (ZMTP PINGs do this between brigade ranks; a tool may send it instead).
    Heartbeat,
    /// The sender has sent everything: its silence from now on is expected.
    Bye,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub magic: u32,
    pub version: u16,
    pub run_id: u64,
    pub job_hash: u64,
    pub from_stage: u32,
    pub kind: ControlKind,
}

impl Control {
    pub fn new(kind: ControlKind, run_id: u64, job_hash: u64, from_stage: usize) -> Self {
        Control {
            magic: MAGIC,
            version: VERSION,
            run_id,
            job_hash,
            from_stage: from_stage as u32,
            kind,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a control frame always serialises")
    }

    /// Decodes a control frame and checks it belongs to this job and comes from `peer`.
    pub fn decode_checked(
        frame: &[u8],
        run_id: u64,
        job_hash: u64,
        peer: usize,
    ) -> Result<Control, Mismatch> {
        Self::decode_inner(frame, run_id, job_hash, peer).map_err(mismatch)
    }

    fn decode_inner(
        frame: &[u8],
        run_id: u64,
        job_hash: u64,
        peer: usize,
    ) -> Result<Control, String> {
        let c: Control = rmp_serde::from_slice(frame)
            .map_err(|e| format!("not a brigade control frame ({e})"))?;
        if c.magic != MAGIC {
            return Err(format!("not a brigade peer (magic {:#010x})", c.magic));
        }
        if c.version != VERSION {
            return Err(format!(
                "peer speaks protocol version {}, this brigade speaks {VERSION}; run the same brigade version everywhere",
                c.version
            ));
        }
        check_identity(
            c.run_id,
            c.job_hash,
            c.from_stage as usize,
            run_id,
            job_hash,
            peer,
        )?;
        Ok(c)
    }
}

/// Whether a peer that says it is rank `rank` of run `run` with job hash `job` is the `peer`
/// this link expects (the same checks for a hello and for ZMTP READY metadata).
pub fn check_identity(
    run: u64,
    job: u64,
    rank: usize,
    run_id: u64,
    job_hash: u64,
    peer: usize,
) -> Result<(), String> {
    if run != run_id {
        return Err(format!(
            "peer belongs to run {run:016x}, this is run {run_id:016x} (a stale process from another run, launchers given different --run-id, or ranks given different plans or topologies: a run id given as a name, or none, is derived from the job plan)"
        ));
    }
    if job != job_hash {
        return Err(format!(
            "{OTHER_PLAN} (job hash {job:016x}, here {job_hash:016x}): a different topology, split or schedule; give every host the same plan file (`brigade plan --out`), or the same topology file and --set overrides"
        ));
    }
    if rank != peer {
        return Err(format!(
            "peer says it is rank {rank}, expected rank {peer} (mis-wired endpoints)"
        ));
    }
    Ok(())
}

/// Classifies a refusal's text.
pub fn mismatch(why: String) -> Mismatch {
    if why.starts_with(OTHER_PLAN) {
        Mismatch::Plan(why)
    } else {
        Mismatch::Other(why)
    }
}
