//! Ranks finding each other at run time, for clusters that hand out machines when a job starts
//! (Slurm, Spark, Kubernetes): rank 0 hosts a rendezvous at `HOST:PORT`; every rank (rank 0
//! too) registers `(rank, endpoint, job hash, run id)` there and gets every rank's endpoint
//! back once all have registered. A rank with another job hash is refused with both hashes; a
//! rank that never shows up is named when the timeout passes. The exchange is ZMTP 3.1 on TCP,
//! CURVE with the job's keys under a job secret. Engines that exchange addresses themselves
//! (Spark's `allGather`) pass `--peers` instead and skip this.

use crate::transport::net::JobKeys;
use brigade_wire::zmtp::io::{Inbound, Mechanism, handshake_with, receive, send};
use brigade_wire::zmtp::{SocketType, curve::Session};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};

/// What a rank says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub rank: usize,
    pub endpoint: String,
    pub job_hash: String,
    pub run_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Endpoints(Vec<String>),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error(
        "cannot reach the rendezvous at {addr} within {secs} s: {why}. Check that rank 0 was started with the same --rendezvous and that the address is reachable"
    )]
    Unreachable {
        addr: String,
        secs: u64,
        why: String,
    },
    #[error("the rendezvous at {addr} refused rank {rank}: {why}")]
    Refused {
        addr: String,
        rank: usize,
        why: String,
    },
    #[error(
        "rendezvous at {addr}: ranks {missing:?} did not register within {secs} s (registered: {seen:?}). Check that every rank was started, with the same plan and --rendezvous"
    )]
    Missing {
        addr: String,
        missing: Vec<usize>,
        seen: Vec<usize>,
        secs: u64,
    },
    #[error("rendezvous at {addr}: {why}")]
    Io { addr: String, why: String },
}

const LIMIT: u64 = 1 << 20;
/// Connections registering at once.
const PENDING: usize = 64;
/// How long the rendezvous keeps answering latecomers once complete.
const LATE_WITHIN: Duration = Duration::from_secs(1);
/// How long one connection may take to register.
const REGISTER_WITHIN: Duration = Duration::from_secs(5);

/// Stops the accept loop when the rendezvous ends.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn server_mechanism(keys: &Option<JobKeys>) -> Mechanism {
    match keys {
        Some(k) => Mechanism::CurveServer {
            long: k.server.clone(),
            allowed: vec![k.client.public],
        },
        None => Mechanism::Null,
    }
}

pub(crate) fn client_mechanism(keys: &Option<JobKeys>) -> Mechanism {
    match keys {
        Some(k) => Mechanism::CurveClient {
            long: k.client.clone(),
            server: k.server.public,
        },
        None => Mechanism::Null,
    }
}

/// One registered connection, waiting for the table.
pub(crate) struct Waiting {
    stream: TcpStream,
    session: Option<Session>,
}

pub(crate) async fn reply<R: Serialize>(w: &mut Waiting, r: &R) {
    let body = serde_json::to_vec(r).expect("a reply serialises");
    let _ = send(&mut w.stream, &[&body], w.session.as_mut()).await;
}

/// Reads one registration (a JSON `T`) from a fresh connection.
pub(crate) async fn accept_one<T: serde::de::DeserializeOwned>(
    mut stream: TcpStream,
    keys: &Option<JobKeys>,
) -> Result<(T, Waiting), String> {
    let (_, mut session) = handshake_with(
        &mut stream,
        SocketType::Pull,
        &Vec::new(),
        &server_mechanism(keys),
    )
    .await
    .map_err(|e| e.to_string())?;
    match receive(&mut stream, LIMIT, 1, session.as_mut()).await {
        Ok(Inbound::Message(m)) => {
            let reg: T = serde_json::from_slice(&m[0])
                .map_err(|e| format!("not a brigade registration: {e}"))?;
            Ok((reg, Waiting { stream, session }))
        }
        Ok(Inbound::Command(_)) => Err("a command instead of a registration".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What the accept loop hands over: where a connection came from and what it registered.
pub(crate) type Accepted<T> = (std::net::SocketAddr, Result<(T, Waiting), String>);

/// Accepts connections on `listener` and reads one `T` from each, concurrently, each within a
/// few seconds, at most PENDING at once: a silent or slow stranger cannot hold a rendezvous up.
/// The loop stops when the returned guard is dropped.
pub(crate) fn accept_loop<T: serde::de::DeserializeOwned + Send + 'static>(
    listener: TcpListener,
    keys: Option<JobKeys>,
    addr: &str,
) -> (AbortOnDrop, tokio::sync::mpsc::Receiver<Accepted<T>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(PENDING);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(PENDING));
    let addr = addr.to_string();
    let accepting = tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rendezvous at {addr}: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                eprintln!("rendezvous at {addr}: too many pending connections; dropped {from}");
                continue;
            };
            let (tx, keys) = (tx.clone(), keys.clone());
            tokio::spawn(async move {
                let r = tokio::time::timeout(REGISTER_WITHIN, accept_one::<T>(stream, &keys))
                    .await
                    .unwrap_or_else(|_| Err("did not register in time".into()));
                drop(permit);
                let _ = tx.send((from, r)).await;
            });
        }
    });
    (AbortOnDrop(accepting), rx)
}

/// Rank 0's side: accepts registrations on `listener` until all `ranks` have registered (or
/// `within` passes), then answers every rank with the endpoint table.
pub async fn serve(
    listener: TcpListener,
    ranks: usize,
    run_id: &str,
    job_hash: &str,
    keys: Option<JobKeys>,
    within: Duration,
) -> Result<Vec<String>, RendezvousError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let deadline = Instant::now() + within;
    let mut table: BTreeMap<usize, (String, Waiting)> = BTreeMap::new();
    let (_stop, mut rx) = accept_loop::<Registration>(listener, keys, &addr);
    while table.len() < ranks {
        let (from, registered) = match timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => {
                let seen: Vec<usize> = table.keys().copied().collect();
                let missing = (0..ranks).filter(|r| !table.contains_key(r)).collect();
                let e = RendezvousError::Missing {
                    addr: addr.clone(),
                    missing,
                    seen,
                    secs: within.as_secs(),
                };
                for (_, w) in table.values_mut() {
                    reply(w, &Reply::Error(e.to_string())).await;
                }
                return Err(e);
            }
        };
        let (reg, mut waiting) = match registered {
            Ok(r) => r,
            Err(why) => {
                eprintln!("rendezvous at {addr}: refused a connection from {from}: {why}");
                continue;
            }
        };
        let refusal = if reg.job_hash != job_hash || reg.run_id != run_id {
            Some(format!(
                "rank {} was given another plan or run (job hash {}, run {}); rank 0 has job hash {job_hash}, run {run_id}. Give every rank the same plan file and --run-id",
                reg.rank, reg.job_hash, reg.run_id
            ))
        } else if reg.rank >= ranks {
            Some(format!(
                "rank {} does not exist; the plan has {ranks} ranks",
                reg.rank
            ))
        } else if table.contains_key(&reg.rank) {
            Some(format!("rank {} registered twice", reg.rank))
        } else {
            None
        };
        match refusal {
            Some(why) => {
                eprintln!("rendezvous at {addr}: refused {from}: {why}");
                reply(&mut waiting, &Reply::Error(why)).await;
            }
            None => {
                table.insert(reg.rank, (reg.endpoint, waiting));
            }
        }
    }
    let endpoints: Vec<String> = table.values().map(|(e, _)| e.clone()).collect();
    for (_, w) in table.values_mut() {
        reply(w, &Reply::Endpoints(endpoints.clone())).await;
    }
    // A rank that arrives just after the table is complete (a doubled index, a restarted
    // task) is told why instead of waiting for its timeout.
    let late = Instant::now() + LATE_WITHIN;
    while let Ok(Some((from, registered))) = timeout_at(late, rx.recv()).await {
        if let Ok((reg, mut waiting)) = registered {
            let why = if table.contains_key(&reg.rank) {
                format!("rank {} registered twice", reg.rank)
            } else {
                format!("rank {} came after every rank had registered", reg.rank)
            };
            eprintln!("rendezvous at {addr}: refused {from}: {why}");
            reply(&mut waiting, &Reply::Error(why)).await;
        }
    }
    Ok(endpoints)
}

/// A client's side of one exchange: connects to `addr` (retrying until `within` passes), sends
/// `msg` and waits for one JSON answer until `answer_within` (from the start) passes.
pub(crate) async fn exchange<T: Serialize, R: serde::de::DeserializeOwned>(
    addr: &str,
    msg: &T,
    keys: Option<JobKeys>,
    within: Duration,
    answer_within: Duration,
) -> Result<R, RendezvousError> {
    let start = Instant::now();
    let deadline = start + within;
    let unreachable = |why: String| RendezvousError::Unreachable {
        addr: addr.to_string(),
        secs: within.as_secs(),
        why,
    };
    let io = |why: String| RendezvousError::Io {
        addr: addr.to_string(),
        why,
    };
    let mut stream = loop {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) if Instant::now() >= deadline => return Err(unreachable(e.to_string())),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => return Err(unreachable("the connection did not complete".into())),
        }
    };
    let (none, mechanism) = (Vec::new(), client_mechanism(&keys));
    let handshake = handshake_with(&mut stream, SocketType::Push, &none, &mechanism);
    let (_, mut session) = match timeout_at(deadline, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(format!("ZMTP handshake failed: {e}"))),
        Err(_) => return Err(unreachable("the ZMTP handshake did not complete".into())),
    };
    let body = serde_json::to_vec(msg).expect("a registration serialises");
    send(&mut stream, &[&body], session.as_mut())
        .await
        .map_err(|e| io(e.to_string()))?;
    let answer = timeout_at(
        start + answer_within,
        receive(&mut stream, LIMIT, 1, session.as_mut()),
    );
    match answer.await {
        Ok(Ok(Inbound::Message(m))) => {
            serde_json::from_slice(&m[0]).map_err(|e| io(format!("a garbled reply: {e}")))
        }
        Ok(Ok(Inbound::Command(_))) => Err(io("a command instead of a reply".into())),
        Ok(Err(e)) => Err(io(format!("no reply: {e}"))),
        Err(_) => Err(io("no reply before the timeout".into())),
    }
}

/// Every rank's side: registers `me` at `addr` and waits for every rank's endpoint.
pub async fn register(
    addr: &str,
    me: &Registration,
    keys: Option<JobKeys>,
    within: Duration,
) -> Result<Vec<String>, RendezvousError> {
    let io = |why: String| RendezvousError::Io {
        addr: addr.to_string(),
        why,
    };
    // The answer comes once every rank has registered: wait as long as rank 0 does, and a bit.
    let reply: Reply = exchange(addr, me, keys, within, within + Duration::from_secs(5)).await?;
    match reply {
        Reply::Endpoints(e) => {
            let valid = |s: &String| {
                s.strip_prefix("tcp://")
                    .and_then(|a| a.rsplit_once(':'))
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            };
            match e.iter().find(|s| !valid(s)) {
                Some(bad) => Err(io(format!("a malformed endpoint {bad:?} in the reply"))),
                None => Ok(e),
            }
        }
        Reply::Error(why) => Err(RendezvousError::Refused {
            addr: addr.to_string(),
            rank: me.rank,
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn reg(rank: usize, job: &str) -> Registration {
        Registration {
            rank,
            endpoint: format!("tcp://10.0.0.{rank}:7000"),
            job_hash: job.into(),
            run_id: "r".into(),
        }
    }

    type Outcome = Result<Vec<String>, RendezvousError>;

    /// Rank 0's server and one client per registration, concurrently.
    fn exchange(
        keys: Option<JobKeys>,
        regs: Vec<Registration>,
        ranks: usize,
    ) -> (Outcome, Vec<Outcome>) {
        rt().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let clients: Vec<_> = regs
                .into_iter()
                .map(|r| {
                    let (addr, keys) = (addr.clone(), keys.clone());
                    tokio::spawn(
                        async move { register(&addr, &r, keys, Duration::from_secs(2)).await },
                    )
                })
                .collect();
            let server = serve(listener, ranks, "r", "j", keys, Duration::from_secs(2)).await;
            let mut out = Vec::new();
            for c in clients {
                out.push(c.await.unwrap());
            }
            (server, out)
        })
    }

    #[test]
    fn every_rank_gets_every_endpoint_with_and_without_curve() {
        for keys in [None, Some(JobKeys::from_secret(b"a secret of 16 bytes"))] {
            let (server, clients) = exchange(keys, vec![reg(1, "j"), reg(0, "j")], 2);
            let want = vec![
                "tcp://10.0.0.0:7000".to_string(),
                "tcp://10.0.0.1:7000".into(),
            ];
            assert_eq!(server.unwrap(), want);
            for c in clients {
                assert_eq!(c.unwrap(), want);
            }
        }
    }

    #[test]
    fn another_plan_is_refused_with_both_hashes_and_missing_ranks_are_named() {
        let (server, clients) = exchange(None, vec![reg(0, "j"), reg(1, "other")], 2);
        let e = clients[1].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("job hash other") && e.contains("rank 0 has job hash j"),
            "{e}"
        );
        let e = server.unwrap_err().to_string();
        assert!(
            e.contains("ranks [1] did not register") && e.contains("registered: [0]"),
            "{e}"
        );
        let e = clients[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("ranks [1] did not register"), "{e}");
    }
}
