//! ZMTP on a CURVE connection: every frame travels boxed in a MESSAGE command (RFC 26), its
//! MORE and COMMAND flags inside the box, as libzmq sends it.

use super::plain::{Inbound, read_head};
use crate::aligned::{Frame, read_frame};
use crate::zmtp::command::Command;
use crate::zmtp::curve::{PREFIX, Session};
use crate::zmtp::error::ZmtpError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
