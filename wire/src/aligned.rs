//! Received frames as tensor storage: every data frame is read straight into its own
//! allocation, aligned for any wire element type and not zero-filled first, so a payload
//! becomes a burn tensor's bytes without a copy. (brigade's own framing of decision 0005 lived
//! here; ZMTP 3.1 in [`crate::zmtp`] replaced it, decision 0007.)
//!
//! A [`Frame`] keeps the vector it was read into, typed by its alignment, rather than burn's
//! `Bytes`: this crate needs no burn, and the engine adopts the vector as `Bytes` (no copy).

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use tokio::io::{AsyncRead, ReadBuf};

/// A received frame: its bytes, in a vector of the widest element that divides its length,
/// so that it is aligned for any element type a tensor of that size can have.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Frame::U8(v) => v,
            Frame::U16(v) => bytemuck::cast_slice(v),
            Frame::U32(v) => bytemuck::cast_slice(v),
            Frame::U64(v) => bytemuck::cast_slice(v),
        }
    }
}

impl DerefMut for Frame {
    /// A CURVE box is opened in place, in the storage that becomes the tensor.
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Frame::U8(v) => v,
            Frame::U16(v) => bytemuck::cast_slice_mut(v),
            Frame::U32(v) => bytemuck::cast_slice_mut(v),
            Frame::U64(v) => bytemuck::cast_slice_mut(v),
        }
    }
}

impl From<Vec<u8>> for Frame {
    /// Bytes already in memory (a CURVE box's plaintext), as they are: byte-aligned.
    fn from(bytes: Vec<u8>) -> Frame {
        Frame::U8(bytes)
    }
}

impl std::fmt::Debug for Frame {
    // A payload can be megabytes: its size says enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.len())
    }
}

/// Reads `len` bytes into fresh storage aligned for its largest fitting element type, without
/// zero-filling it first.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Frame> {
    match len {
        n if n % 8 == 0 => read_elems::<u64, R>(r, len).await.map(Frame::U64),
        n if n % 4 == 0 => read_elems::<u32, R>(r, len).await.map(Frame::U32),
        n if n % 2 == 0 => read_elems::<u16, R>(r, len).await.map(Frame::U16),
        _ => read_elems::<u8, R>(r, len).await.map(Frame::U8),
    }
}

async fn read_elems<E, R>(r: &mut R, len: usize) -> std::io::Result<Vec<E>>
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn frames_are_aligned_and_truncation_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            let writer = async {
                a.write_all(&big).await.unwrap();
                a.write_all(b"short").await.unwrap();
                drop(a);
            };
            let reader = async {
                let f = read_frame(&mut b, 300_000).await.unwrap();
                assert_eq!(&f[..], &big[..]);
                assert_eq!(f.as_ptr() as usize % 8, 0, "payloads are 8-aligned");
                let e = read_frame(&mut b, 10).await.unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
            };
            tokio::join!(writer, reader);
        });
    }
}
