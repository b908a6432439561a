//! brigade's framing on a byte stream (TCP or a Unix socket), replacing ZMTP
//! ([decision 0005](../../../../docs/decisions/0005-own-framing.md)).
//!
//! A connection opens with the 8-byte [`GREETING`] from the connecting side; then each
//! message is
//!
//! ```text
//! n: u8 (1..=3) | len_0: u64 le | … | len_{n-1}: u64 le | frame_0 | … | frame_{n-1}
//! ```
//!
//! Every length is checked against the receiver's limit *before* anything is allocated, so a
//! peer cannot make a stage reserve more than the plan's largest tensor (the zeromq decoder
//! reserved any declared length, decision 0003). Each frame is read straight into its own
//! allocation, aligned for any wire element type, so a payload frame becomes a tensor's
//! storage without a copy; and a large frame is written straight from the tensor's memory.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Opens every connection: "BRIGADE", then the wire version.
pub const GREETING: [u8; 8] = *b"BRIGADE\x01";
/// The most frames in one message (header, payload, tag).
pub const MAX_FRAMES: usize = 3;
/// Frames up to this size are gathered into one write with the message prefix.
const COALESCE: usize = 64 * 1024;

/// A received frame: aligned storage that burn can adopt as a tensor's bytes.
pub type Frame = burn::tensor::Bytes;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream ended cleanly between messages.
    #[error("the connection was closed")]
    Closed,
    #[error("the connection broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a brigade peer (it opened with {0:02x?} instead of the brigade greeting)")]
    Greeting([u8; 8]),
    #[error("a message of {0} frames (brigade sends 1 to {MAX_FRAMES})")]
    FrameCount(u8),
    #[error("a frame of {len} bytes exceeds this link's limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
}

/// Reads the greeting a connecting peer must send first.
pub async fn read_greeting<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), WireError> {
    let mut got = [0u8; 8];
    r.read_exact(&mut got).await?;
    if got == GREETING {
        Ok(())
    } else {
        Err(WireError::Greeting(got))
    }
}

/// Reads one message, refusing any frame longer than `limit` bytes before allocating it.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
) -> Result<Vec<Frame>, WireError> {
    let mut n = [0u8; 1];
    // EOF here is the peer closing between messages; anywhere later it is a broken message.
    if r.read(&mut n).await? == 0 {
        return Err(WireError::Closed);
    }
    let n = n[0];
    if n == 0 || n as usize > MAX_FRAMES {
        return Err(WireError::FrameCount(n));
    }
    let mut lens = [0u8; 8 * MAX_FRAMES];
    let lens = &mut lens[..8 * n as usize];
    r.read_exact(lens).await?;
    let lens: Vec<u64> = lens
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if let Some(&len) = lens.iter().find(|&&l| l > limit) {
        return Err(WireError::TooLarge { len, limit });
    }
    let mut frames = Vec::with_capacity(lens.len());
    for len in lens {
        frames.push(read_frame(r, len as usize).await?);
    }
    Ok(frames)
}

/// Reads `len` bytes into fresh storage aligned for its largest fitting element type, without
/// zero-filling it first.
pub(in crate::transport::net) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> std::io::Result<Frame> {
    match len {
        n if n % 8 == 0 => read_elems::<u64, R>(r, len).await,
        n if n % 4 == 0 => read_elems::<u32, R>(r, len).await,
        n if n % 2 == 0 => read_elems::<u16, R>(r, len).await,
        _ => read_elems::<u8, R>(r, len).await,
    }
}

async fn read_elems<E, R>(r: &mut R, len: usize) -> std::io::Result<Frame>
where
    E: bytemuck::NoUninit + Send + Sync,
    R: AsyncRead + Unpin,
{
    let n = len / size_of::<E>();
    let mut out: Vec<E> = Vec::with_capacity(n);
    let spare = out.spare_capacity_mut();
    // SAFETY: the spare capacity holds at least n elements = len bytes; viewing uninitialised
    // elements as uninitialised bytes is sound, and ReadBuf never exposes unfilled bytes.
    let raw: &mut [MaybeUninit<u8>] =
        unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast(), len) };
    let mut buf = ReadBuf::uninit(raw);
    while buf.remaining() > 0 {
        let before = buf.filled().len();
        poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut buf)).await?;
        if buf.filled().len() == before {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    // SAFETY: the loop above initialised all len bytes, i.e. the first n elements, and every
    // bit pattern is a valid E (plain integers).
    unsafe { out.set_len(n) };
    Ok(burn::tensor::Bytes::from_elems(out))
}

/// Writes one message of 1 to [`MAX_FRAMES`] frames. Small frames go out with the prefix in
/// one write; a large frame is written from its own memory.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[&[u8]],
) -> std::io::Result<()> {
    assert!(
        (1..=MAX_FRAMES).contains(&frames.len()),
        "brigade messages have 1 to {MAX_FRAMES} frames"
    );
    let mut buf = Vec::with_capacity(1 + 8 * frames.len() + COALESCE);
    buf.push(frames.len() as u8);
    for f in frames {
        buf.extend((f.len() as u64).to_le_bytes());
    }
    for f in frames {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn messages_round_trip_with_aligned_frames() {
        rt().block_on(async {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let big: Vec<u8> = (0..300_001u32).map(|i| i as u8).collect();
            let frames: Vec<Vec<u8>> = vec![b"head".to_vec(), big.clone(), vec![7; 32]];
            let writer = async {
                write_message(&mut a, &[b"x"]).await.unwrap();
                let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                write_message(&mut a, &refs).await.unwrap();
                write_message(&mut a, &[&big[..300_000]]).await.unwrap();
                drop(a);
            };
            let reader = async {
                let m = read_message(&mut b, 1 << 20).await.unwrap();
                assert_eq!(m.len(), 1);
                assert_eq!(&m[0][..], b"x");
                let m = read_message(&mut b, 1 << 20).await.unwrap();
                let got: Vec<Vec<u8>> = m.iter().map(|f| f.to_vec()).collect();
                assert_eq!(got, frames);
                let m = read_message(&mut b, 1 << 20).await.unwrap();
                assert_eq!(&m[0][..], &big[..300_000]);
                assert_eq!(m[0].as_ptr() as usize % 8, 0, "payloads are 8-aligned");
                assert!(matches!(
                    read_message(&mut b, 1 << 20).await,
                    Err(WireError::Closed)
                ));
            };
            tokio::join!(writer, reader);
        });
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        rt().block_on(async {
            let (mut a, mut b) = tokio::io::duplex(1 << 10);
            let mut m = vec![1u8];
            m.extend((1u64 << 40).to_le_bytes());
            a.write_all(&m).await.unwrap();
            match read_message(&mut b, 1 << 20).await {
                Err(WireError::TooLarge { len, limit }) => {
                    assert_eq!((len, limit), (1 << 40, 1 << 20))
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
        });
    }

    #[test]
    fn bad_counts_greetings_and_truncation_are_errors() {
        rt().block_on(async {
            for n in [0u8, 4, 255] {
                let (mut a, mut b) = tokio::io::duplex(64);
                a.write_all(&[n]).await.unwrap();
                assert!(matches!(
                    read_message(&mut b, 100).await,
                    Err(WireError::FrameCount(x)) if x == n
                ));
            }
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            assert!(matches!(
                read_greeting(&mut b).await,
                Err(WireError::Greeting(_))
            ));
            let (mut a, mut b) = tokio::io::duplex(64);
            let mut m = vec![1u8];
            m.extend(10u64.to_le_bytes());
            m.extend(b"short");
            a.write_all(&m).await.unwrap();
            drop(a);
            assert!(matches!(
                read_message(&mut b, 100).await,
                Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
            ));
        });
    }
}
