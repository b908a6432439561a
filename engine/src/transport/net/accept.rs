//! One link's connections: accepts them on this rank's endpoint and reads each (the ZMTP
//! handshake, then messages and commands, answering PINGs), reporting every arrival and read
//! error as an [`Event`] to the pull task, which alone decides what they mean.

use brigade_wire::Frame;
use brigade_wire::socket::{Conn, Listener};
use brigade_wire::zmtp::command::Command;
use brigade_wire::zmtp::curve::Session;
use brigade_wire::zmtp::io::Inbound;
use brigade_wire::zmtp::{self, Mechanism, Metadata, SocketType, ZmtpError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A brigade message: a header and a payload, or one control frame.
const MAX_FRAMES: usize = 2;

pub(super) struct Event {
    /// Which connection (numbered in accept order).
    pub(super) conn: u64,
    /// Where it comes from.
    pub(super) addr: Arc<str>,
    pub(super) what: Result<Arrival, ZmtpError>,
}

/// What one connection's reader reports.
pub(super) enum Arrival {
    /// The ZMTP handshake finished; the peer's READY metadata.
    Ready(Metadata),
    Message(Vec<Frame>),
    /// A heartbeat (answered with PONG by the reader).
    Ping,
}

/// What every connection's reader on one link needs.
pub(super) struct ReaderConfig {
    /// The largest data frame.
    pub(super) limit: u64,
    /// How long a connection may take to finish the ZMTP handshake.
    pub(super) greeting_within: std::time::Duration,
    /// This rank's READY metadata.
    pub(super) ours: Metadata,
    /// NULL, or CURVE with the job's keys (`tcp://` under a job secret).
    pub(super) mechanism: Mechanism,
    /// Handshakes in progress at once: strangers cannot use up the rank's descriptors.
    pub(super) pending: Arc<tokio::sync::Semaphore>,
    /// Each open connection's reader, so that a refused stranger's can be stopped.
    pub(super) readers: Readers,
}

/// Open connections' readers, by connection.
pub(super) type Readers = Arc<std::sync::Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

/// Handshakes in progress at once, per listener.
pub(super) const PENDING_HANDSHAKES: usize = 16;
/// The longest a handshake may take once the connection is open.
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections and starts a reader for each, until the pull task ends.
pub(super) async fn accept_loop(
    who: String,
    listener: Listener,
    events: mpsc::UnboundedSender<Event>,
    reader: Arc<ReaderConfig>,
) {
    for conn in 0u64.. {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: the established links carry on; back off rather
                // than spin on an accept that keeps failing.
                eprintln!("{who}: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = reader.pending.clone().try_acquire_owned() else {
            eprintln!("{who}: too many connections still in their handshake; dropped {addr}");
            continue;
        };
        let task = tokio::spawn(read_loop(
            conn,
            stream,
            addr.into(),
            events.clone(),
            reader.clone(),
            permit,
        ));
        let mut readers = reader.readers.lock().expect("readers lock");
        readers.retain(|_, h| !h.is_finished());
        readers.insert(conn, task.abort_handle());
    }
}

async fn read_loop(
    conn: u64,
    mut stream: Conn,
    addr: Arc<str>,
    events: mpsc::UnboundedSender<Event>,
    reader: Arc<ReaderConfig>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (limit, ours) = (reader.limit, &reader.ours);
    let send = |what| {
        events
            .send(Event {
                conn,
                addr: addr.clone(),
                what,
            })
            .is_ok()
    };
    let handshake =
        zmtp::io::handshake_with(&mut stream, SocketType::Pull, ours, &reader.mechanism);
    let within = reader.greeting_within.min(HANDSHAKE_WITHIN);
    let handshaken = timeout(within, handshake).await;
    drop(permit);
    let mut session = match handshaken {
        Ok(Ok((meta, session))) => {
            if !send(Ok(Arrival::Ready(meta))) {
                return;
            }
            session.map(Session::split)
        }
        Ok(Err(e)) => {
            send(Err(e));
            return;
        }
        Err(_) => {
            send(Err(ZmtpError::Io(std::io::ErrorKind::TimedOut.into())));
            return;
        }
    };
    loop {
        let opener = session.as_mut().map(|(_, open)| open);
        let what = match zmtp::io::receive(&mut stream, limit, MAX_FRAMES, opener).await {
            Ok(Inbound::Message(frames)) => Ok(Arrival::Message(frames)),
            Ok(Inbound::Command(Command::Ping { context, .. })) => {
                let sealer = session.as_mut().map(|(seal, _)| seal);
                let pong = Command::Pong { context };
                match zmtp::io::send_command(&mut stream, &pong, sealer).await {
                    Ok(()) => Ok(Arrival::Ping),
                    // The peer may have sent its last PING just before its BYE and closed the
                    // connection: the BYE is still ours to read. Keep reading; a connection that
                    // is really gone fails the next read.
                    Err(_) => continue,
                }
            }
            Ok(Inbound::Command(Command::Error(reason))) => Err(ZmtpError::PeerError(reason)),
            // PONG, and commands a PULL socket has no use for.
            Ok(Inbound::Command(_)) => continue,
            Err(e) => Err(e),
        };
        let end = what.is_err();
        if !send(what) || end {
            return;
        }
    }
}
