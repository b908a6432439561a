//! Moving ZMTP bytes on any byte stream (TCP, Unix socket, an in-memory pipe in tests): the
//! NULL handshake, and messages and commands in both directions. Every size is checked
//! against a limit before a byte of the body is allocated or read.

use super::command::{Command, Metadata, SocketType, property};
use super::curve::{Client, KeyPair, Server, Session};
use super::error::ZmtpError;
use super::{frame, greeting};

mod boxed;
mod plain;
pub use boxed::{CURVE_OVERHEAD, read_boxed, write_boxed, write_boxed_command};
pub use plain::{COMMAND_LIMIT, Inbound, read, read_command, write_command, write_message};
use plain::{read_body, read_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn eof_is_closed(e: std::io::Error) -> ZmtpError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ZmtpError::Closed
    } else {
        ZmtpError::Io(e)
    }
}

/// The security mechanism of a connection.
#[derive(Debug, Clone)]
pub enum Mechanism {
    Null,
    /// CURVE, connecting: our long-term keys and the server's public key.
    CurveClient {
        long: KeyPair,
        server: [u8; 32],
    },
    /// CURVE, listening: our long-term keys and the client keys allowed in.
    CurveServer {
        long: KeyPair,
        allowed: Vec<[u8; 32]>,
    },
}

impl Mechanism {
    fn name(&self) -> &'static str {
        match self {
            Mechanism::Null => "NULL",
            _ => "CURVE",
        }
    }
}

/// Exchanges greetings and READY commands (mechanism NULL) as a `ours` socket, announcing
/// `metadata` beside `Socket-Type`; returns the peer's metadata. Refuses anything that is not a
/// ZMTP ≥ 3.0 peer of the matching socket type using NULL.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: SocketType,
    metadata: &Metadata,
) -> Result<Metadata, ZmtpError> {
    Ok(handshake_with(s, ours, metadata, &Mechanism::Null).await?.0)
}

/// [`handshake`] under `mechanism`; with CURVE, also the session that boxes every frame.
pub async fn handshake_with<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: SocketType,
    metadata: &Metadata,
    mechanism: &Mechanism,
) -> Result<(Metadata, Option<Session>), ZmtpError> {
    let h = shake(s, ours, metadata, mechanism).await?;
    Ok((h.metadata, h.session))
}

/// What a finished handshake established.
pub struct Handshake {
    /// The peer's READY metadata.
    pub metadata: Metadata,
    /// CURVE's session, if the mechanism is CURVE.
    pub session: Option<Session>,
    /// The peer's ZMTP minor version: PING and PONG exist from 3.1 on, so a 3.0 peer (the
    /// `zeromq` crate) must not be sent them.
    pub minor: u8,
}

/// [`handshake_with`], also saying which ZMTP 3.x the peer speaks.
pub async fn shake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: SocketType,
    metadata: &Metadata,
    mechanism: &Mechanism,
) -> Result<Handshake, ZmtpError> {
    let as_server = matches!(mechanism, Mechanism::CurveServer { .. });
    // Send the whole greeting at once: a peer that waits for our signature before sending
    // the rest of its own (libzmq does) is not kept waiting.
    s.write_all(&greeting::encode(mechanism.name(), as_server))
        .await?;
    s.flush().await?;
    let mut g = [0u8; greeting::LEN];
    s.read_exact(&mut g[..greeting::SIGNATURE_LEN])
        .await
        .map_err(eof_is_closed)?;
    greeting::check_signature(g[..greeting::SIGNATURE_LEN].try_into().expect("10 bytes"))?;
    s.read_exact(&mut g[10..11]).await?;
    greeting::check_major(g[10])?;
    s.read_exact(&mut g[11..]).await?;
    let peer = greeting::parse(&g)?;
    if peer.mechanism != mechanism.name() {
        return Err(ZmtpError::Mechanism(peer.mechanism, mechanism.name()));
    }
    let mut ready: Metadata = vec![("Socket-Type".into(), ours.name().as_bytes().to_vec())];
    ready.extend(metadata.iter().cloned());
    let (theirs, session) = match mechanism {
        Mechanism::Null => {
            write_command(s, &Command::Ready(ready)).await?;
            match read_command(s).await? {
                Command::Ready(meta) => (meta, None),
                Command::Error(reason) => return Err(ZmtpError::PeerError(reason)),
                other => return Err(ZmtpError::Unexpected(command_name(&other))),
            }
        }
        Mechanism::CurveClient { long, server } => {
            let mut client = Client::new(long.clone(), *server);
            write_raw_command(s, &client.hello()).await?;
            let welcome = read_raw_command(s).await?;
            let initiate = client.on_welcome(&welcome, &ready).map_err(auth)?;
            write_raw_command(s, &initiate).await?;
            let (meta, session) = client
                .on_ready(&read_raw_command(s).await.map_err(auth)?)
                .map_err(auth)?;
            (meta, Some(session))
        }
        Mechanism::CurveServer { long, allowed } => {
            let mut server = Server::new(long.clone(), allowed.clone());
            let welcome = server.on_hello(&read_raw_command(s).await?).map_err(auth)?;
            write_raw_command(s, &welcome).await?;
            let initiate = read_raw_command(s).await?;
            match server.on_initiate(&initiate, &ready).map_err(auth) {
                Ok((meta, ready, session)) => {
                    write_raw_command(s, &ready).await?;
                    (meta, Some(session))
                }
                Err(e) => {
                    // Tell a refused client why, as ZMTP's ERROR, before closing.
                    let _ = write_command(s, &Command::Error(e.to_string())).await;
                    return Err(e);
                }
            }
        }
    };
    let wants = ours.peer().name();
    match property(&theirs, "Socket-Type") {
        Some(t) if t == wants.as_bytes() => Ok(Handshake {
            metadata: theirs,
            session,
            minor: if peer.major > 3 { u8::MAX } else { peer.minor },
        }),
        other => Err(ZmtpError::SocketType {
            peer: other.map_or("(unnamed)".into(), |t| {
                String::from_utf8_lossy(t).into_owned()
            }),
            ours: ours.name(),
            wants,
        }),
    }
}

/// A failure inside the CURVE exchange means the peer does not hold the keys.
fn auth(e: ZmtpError) -> ZmtpError {
    match e {
        e @ (ZmtpError::Io(_) | ZmtpError::Closed | ZmtpError::Auth(_)) => e,
        ZmtpError::PeerError(why) => ZmtpError::Auth(format!("the peer refused us: {why}")),
        e => ZmtpError::Auth(e.to_string()),
    }
}

/// Writes a message, boxed when the connection has a CURVE session.
pub async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[&[u8]],
    session: Option<&mut Session>,
) -> std::io::Result<()> {
    match session {
        Some(s) => write_boxed(w, frames, s).await,
        None => write_message(w, frames).await,
    }
}

/// Writes a command (PING, PONG), boxed when the connection has a CURVE session.
pub async fn send_command<W: AsyncWrite + Unpin>(
    w: &mut W,
    c: &Command,
    session: Option<&mut Session>,
) -> std::io::Result<()> {
    match session {
        Some(s) => write_boxed_command(w, c, s).await,
        None => write_command(w, c).await,
    }
}

/// Reads a message or command, opening boxes when the connection has a CURVE session.
pub async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
    max_frames: usize,
    session: Option<&mut Session>,
) -> Result<Inbound, ZmtpError> {
    match session {
        Some(s) => read_boxed(r, limit, max_frames, s).await,
        None => read(r, limit, max_frames).await,
    }
}

/// The most a CURVE handshake command may declare before it is authenticated (HELLO is 200
/// bytes, WELCOME 168, INITIATE and READY a few hundred with their metadata).
pub const CURVE_HANDSHAKE_LIMIT: u64 = 8 * 1024;

/// Reads a command frame's raw body (CURVE's handshake commands carry boxes, not metadata).
async fn read_raw_command<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ZmtpError> {
    let head = read_head(r, CURVE_HANDSHAKE_LIMIT, CURVE_HANDSHAKE_LIMIT, true).await?;
    if !head.command {
        return Err(ZmtpError::Unexpected(
            "message before the handshake ended".into(),
        ));
    }
    read_body(r, head.len).await
}

async fn write_raw_command<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let (head, n) = frame::encode(false, true, body.len());
    let mut buf = head[..n].to_vec();
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

fn command_name(c: &Command) -> String {
    match c {
        Command::Ready(_) => "READY".into(),
        Command::Error(_) => "ERROR".into(),
        Command::Ping { .. } => "PING".into(),
        Command::Pong { .. } => "PONG".into(),
        Command::Other(n) => n.clone(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod curve_tests;
