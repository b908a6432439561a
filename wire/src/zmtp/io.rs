//! Moving ZMTP bytes on any byte stream (TCP, Unix socket, an in-memory pipe in tests): the
//! NULL handshake, and messages and commands in both directions. Every size is checked
//! against a limit before a byte of the body is allocated or read.

use super::command::{Command, Metadata, SocketType, property};
use super::curve::{Client, KeyPair, PREFIX, Server, Session};
use super::error::ZmtpError;
use super::{frame, greeting};
use crate::aligned::{Frame, read_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a command frame (READY, PING, ERROR, …) may declare.
pub const COMMAND_LIMIT: u64 = 64 * 1024;
/// Data frames up to this size are gathered into one write with the frame heads.
const COALESCE: usize = 64 * 1024;

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

/// Bytes a CURVE MESSAGE adds around a frame: name, nonce, tag, flags.
pub const CURVE_OVERHEAD: u64 = 1 + 7 + 8 + 16 + 1;

/// [`read`] on a CURVE connection: every frame arrives boxed in a MESSAGE command. A data
/// frame is read straight into aligned storage and opened there (no copy).
pub async fn read_boxed<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
    max_frames: usize,
    session: &mut Session,
) -> Result<Inbound, ZmtpError> {
    let mut frames = Vec::new();
    loop {
        let (flags, data) = read_box(r, limit, frames.is_empty(), session).await?;
        if flags & 2 != 0 {
            if !frames.is_empty() {
                return Err(ZmtpError::Malformed {
                    what: "message",
                    why: "a command between the frames of a message".into(),
                });
            }
            return Ok(Inbound::Command(Command::decode(&data)?));
        }
        if frames.len() == max_frames {
            return Err(ZmtpError::FrameCount(max_frames));
        }
        frames.push(data);
        if flags & 1 == 0 {
            return Ok(Inbound::Message(frames));
        }
    }
}

/// Reads one MESSAGE box and opens it: (flags, the frame, decrypted where it was read).
async fn read_box<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
    first: bool,
    session: &mut Session,
) -> Result<(u8, Frame), ZmtpError> {
    // libzmq sends each MESSAGE box as a plain single frame (MORE and COMMAND travel inside
    // the box); accept the COMMAND flag too.
    let boxed = limit + CURVE_OVERHEAD;
    let head = read_head(r, boxed, boxed, first).await?;
    if head.more {
        return Err(ZmtpError::Malformed {
            what: "CURVE message",
            why: "MORE outside the box".into(),
        });
    }
    let mut prefix = [0u8; PREFIX];
    let n = (head.len as usize).min(PREFIX);
    r.read_exact(&mut prefix[..n]).await?;
    if prefix.get(1..8) != Some(b"MESSAGE") {
        // Anyone on the path can write a plain command: nothing outside a box is trusted.
        return Err(ZmtpError::Malformed {
            what: "CURVE session",
            why: "a frame that is not a MESSAGE box (unauthenticated; ignored)".into(),
        });
    }
    if n < PREFIX {
        return Err(ZmtpError::Malformed {
            what: "MESSAGE",
            why: "shorter than a nonce, a tag and a flags byte".into(),
        });
    }
    let mut data = read_frame(r, head.len as usize - PREFIX).await?;
    let flags = session.open_frame(&prefix, &mut data)?;
    Ok((flags, data))
}

/// [`write_message`] on a CURVE connection: each frame is encrypted straight from its memory
/// into the session's outgoing buffer, which goes out in one write.
pub async fn write_boxed<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[&[u8]],
    session: &mut Session,
) -> std::io::Result<()> {
    for (i, f) in frames.iter().enumerate() {
        // As libzmq does: a plain frame, its flags inside the box.
        w.write_all(session.seal_frame(u8::from(i + 1 < frames.len()), f))
            .await?;
    }
    w.flush().await
}

/// [`write_command`] on a CURVE connection (PING, PONG inside a box).
pub async fn write_boxed_command<W: AsyncWrite + Unpin>(
    w: &mut W,
    c: &Command,
    session: &mut Session,
) -> std::io::Result<()> {
    w.write_all(session.seal_frame(2, &c.encode())).await?;
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

/// Reads one frame head, refusing a body over its limit before it is read.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
    command_limit: u64,
    first: bool,
) -> Result<frame::Head, ZmtpError> {
    // Data frames are held to `limit`, command frames to `command_limit`.
    let mut flags = [0u8; 1];
    if r.read(&mut flags).await? == 0 {
        // EOF between messages is the peer closing; inside one it is a broken message.
        return Err(if first {
            ZmtpError::Closed
        } else {
            ZmtpError::Io(std::io::ErrorKind::UnexpectedEof.into())
        });
    }
    let mut size = [0u8; 8];
    let n = frame::size_len(flags[0])?;
    r.read_exact(&mut size[..n]).await?;
    let command = flags[0] & frame::COMMAND != 0;
    frame::decode(
        flags[0],
        &size[..n],
        if command { command_limit } else { limit },
    )
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> Result<Vec<u8>, ZmtpError> {
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads the next command, which must come before any message.
pub async fn read_command<R: AsyncRead + Unpin>(r: &mut R) -> Result<Command, ZmtpError> {
    let head = read_head(r, COMMAND_LIMIT, COMMAND_LIMIT, true).await?;
    if !head.command {
        return Err(ZmtpError::Unexpected("message before READY".into()));
    }
    Command::decode(&read_body(r, head.len).await?)
}

/// What arrived.
#[derive(Debug)]
pub enum Inbound {
    /// A message of 1 to `max_frames` data frames, each in aligned storage.
    Message(Vec<Frame>),
    Command(Command),
}

/// Reads the next message or command; data frames over `limit` bytes or messages of more than
/// `max_frames` frames are refused before they are read.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
    max_frames: usize,
) -> Result<Inbound, ZmtpError> {
    let mut frames = Vec::new();
    loop {
        let head = read_head(r, limit, COMMAND_LIMIT, frames.is_empty()).await?;
        if head.command {
            if !frames.is_empty() {
                return Err(ZmtpError::Malformed {
                    what: "message",
                    why: "a command between the frames of a message".into(),
                });
            }
            return Ok(Inbound::Command(Command::decode(
                &read_body(r, head.len).await?,
            )?));
        }
        if frames.len() == max_frames {
            return Err(ZmtpError::FrameCount(max_frames));
        }
        frames.push(read_frame(r, head.len as usize).await?);
        if !head.more {
            return Ok(Inbound::Message(frames));
        }
    }
}

/// Writes one message. Small frames go out with their heads in one write; a large frame is
/// written from its own memory.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[&[u8]],
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(COALESCE + 9 * frames.len());
    for (i, f) in frames.iter().enumerate() {
        let (head, n) = frame::encode(i + 1 < frames.len(), false, f.len());
        buf.extend_from_slice(&head[..n]);
        if f.len() <= COALESCE {
            buf.extend_from_slice(f);
        } else {
            w.write_all(&buf).await?;
            buf.clear();
            w.write_all(f).await?;
        }
    }
    if !buf.is_empty() {
        w.write_all(&buf).await?;
    }
    w.flush().await
}

/// Writes one command.
pub async fn write_command<W: AsyncWrite + Unpin>(w: &mut W, c: &Command) -> std::io::Result<()> {
    let body = c.encode();
    let (head, n) = frame::encode(false, true, body.len());
    let mut buf = head[..n].to_vec();
    buf.extend(body);
    w.write_all(&buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod curve_tests;
