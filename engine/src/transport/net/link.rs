//! What the I/O thread's tasks share (the tasks module starts them, the pull and push modules
//! run them): the transport's configuration, the mechanism each end of a link uses, the state a
//! pull and a push to one peer share, and the way back to the compute thread. It imports none
//! of them, so that no module of the transport imports a module that imports it.

use crate::endpoints::RankLinks;
use crate::transport::TransportError;
use brigade_wire::secret::JobKeys;
use brigade_wire::zmtp;
use burn::prelude::Device;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What a stage's transport needs to know.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This rank.
    pub stage: usize,
    pub run_id: u64,
    /// The job plan's hash: peers running another plan are refused.
    pub job_hash: u64,
    /// What this rank receives and sends, on which endpoints.
    pub links: RankLinks,
    /// Device received tensors are placed on.
    pub device: Device,
    pub heartbeat: Duration,
    /// Silence after which a connected peer counts as lost.
    pub peer_timeout: Duration,
    /// How long a peer may take to appear at start.
    pub connect_timeout: Duration,
    pub trace: bool,
    /// CURVE keys derived from the job secret: every `tcp://` link uses CURVE with them.
    /// Without a secret, only loopback and ipc peers may take part.
    pub keys: Option<JobKeys>,
}

/// The mechanism a link's end uses: CURVE with the job's keys on `tcp://` under a job secret;
/// NULL on `ipc://` (a run directory only the job's user can open) and without a secret
/// (loopback only).
pub(super) fn mechanism(
    cfg: &NetConfig,
    endpoint: &str,
    role: zmtp::SocketType,
) -> zmtp::Mechanism {
    match &cfg.keys {
        Some(keys) if endpoint.starts_with("tcp://") => match role {
            zmtp::SocketType::Push => zmtp::Mechanism::CurveClient {
                long: keys.client.clone(),
                server: keys.server.public,
            },
            zmtp::SocketType::Pull => zmtp::Mechanism::CurveServer {
                long: keys.server.clone(),
                allowed: vec![keys.client.public],
            },
        },
        _ => zmtp::Mechanism::Null,
    }
}

/// What the I/O thread hands the compute thread: a tensor, or a ring segment for the rank's
/// reducer.
pub(super) use crate::transport::inline::Delivery as FromIo;

/// Where the I/O thread's tasks send received tensors and segments, and fatal errors.
pub(super) type ToCompute = Sender<Result<FromIo, TransportError>>;

/// What the pull task and the push task to one peer rank share.
#[derive(Clone, Default)]
pub(super) struct Link {
    /// The peer said bye: its silence afterwards is expected.
    pub(super) done: Arc<AtomicBool>,
}

/// Stops a helper task (a pull's accept loop, a push's drain) when the task that started it
/// ends.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
