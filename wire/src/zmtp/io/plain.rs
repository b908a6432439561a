//! Plain ZMTP frames (NULL, and the heads of CURVE's boxes): frame heads checked against their
//! limits before a body is read, messages read straight into aligned frames, commands.

use crate::aligned::{Frame, read_frame};
use crate::zmtp::command::Command;
use crate::zmtp::error::ZmtpError;
use crate::zmtp::frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a command frame (READY, PING, ERROR, …) may declare.
pub const COMMAND_LIMIT: u64 = 64 * 1024;
/// Data frames up to this size are gathered into one write with the frame heads.
const COALESCE: usize = 64 * 1024;

/// Reads one frame head, refusing a body over its limit before it is read.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
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

pub(super) async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u64,
) -> Result<Vec<u8>, ZmtpError> {
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
