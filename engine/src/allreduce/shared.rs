//! Values a ring shares with the wire without copying them: a segment is sent from where it
//! lies, and a finished sum is handed over as the segments it is made of.

use std::ops::{Deref, Range};
use std::sync::Arc;

/// f32 values in storage of their own: a vector, or the buffer a received segment was read
/// into (aligned for f32 or wider), taken as f32 where it lies.
pub enum Values {
    F32(Vec<f32>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl Values {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Values::F32(v) => v,
            Values::U32(v) => bytemuck::cast_slice(v),
            Values::U64(v) => bytemuck::cast_slice(v),
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        match self {
            Values::F32(v) => v,
            Values::U32(v) => bytemuck::cast_slice_mut(v),
            Values::U64(v) => bytemuck::cast_slice_mut(v),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Values {
        Values::F32(v)
    }
}

/// A range of a buffer nobody writes any more, shared between the ring that keeps it and the
/// links that send it.
#[derive(Clone)]
pub struct Shared {
    buf: Arc<Values>,
    range: Range<usize>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::from(Vec::new())
    }
}

impl Shared {
    /// `range` of `buf`.
    pub fn view(buf: &Arc<Values>, range: Range<usize>) -> Shared {
        assert!(range.end <= buf.len(), "{range:?} of {} values", buf.len());
        Shared {
            buf: buf.clone(),
            range,
        }
    }

    /// The values as storage of their own: taken without a copy when they are a whole
    /// buffer nobody else holds (a received segment), copied otherwise.
    pub fn into_values(self) -> Values {
        if self.range == (0..self.buf.len()) {
            return Arc::try_unwrap(self.buf).unwrap_or_else(|buf| buf.as_slice().to_vec().into());
        }
        Values::F32(self.buf.as_slice()[self.range].to_vec())
    }

    /// The values as a vector (without a copy where [`Shared::into_values`] makes none and
    /// they are already one).
    pub fn into_vec(self) -> Vec<f32> {
        match self.into_values() {
            Values::F32(v) => v,
            other => other.as_slice().to_vec(),
        }
    }
}

impl From<Values> for Shared {
    fn from(v: Values) -> Shared {
        let range = 0..v.len();
        Shared {
            buf: Arc::new(v),
            range,
        }
    }
}

impl From<Vec<f32>> for Shared {
    fn from(v: Vec<f32>) -> Shared {
        Shared::from(Values::F32(v))
    }
}

impl Deref for Shared {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf.as_slice()[self.range.clone()]
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().take(16)).finish()?;
        if self.len() > 16 {
            write!(f, " ({} values)", self.len())?;
        }
        Ok(())
    }
}

/// A finished sum: its segments in order, as they arrived or were summed — handed on without
/// gathering them into one buffer (the stage copies each gradient out of them anyway).
#[derive(Clone, Debug, Default)]
pub struct Sum {
    pieces: Vec<Shared>,
}

impl Sum {
    /// The sum made of `pieces`, in order.
    pub fn new(pieces: Vec<Shared>) -> Sum {
        Sum { pieces }
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`.
    pub fn value(&self, mut i: usize) -> Option<f32> {
        for p in &self.pieces {
            if i < p.len() {
                return Some(p[i]);
            }
            i -= p.len();
        }
        None
    }

    /// Keeps the first `len` values (the ring pads a buffer to whole segments).
    pub fn truncate(&mut self, len: usize) {
        let mut at = 0;
        self.pieces.retain_mut(|p| {
            let keep = len.saturating_sub(at).min(p.len());
            at += p.len();
            p.range.end = p.range.start + keep;
            keep > 0
        });
    }

    /// The values, piece by piece.
    pub fn slices(&self) -> Vec<&[f32]> {
        self.pieces.iter().map(|p| &**p).collect()
    }

    /// The values in one buffer (taken without a copy when they are one unshared piece).
    pub fn into_vec(mut self) -> Vec<f32> {
        if self.pieces.len() == 1 {
            return self.pieces.remove(0).into_vec();
        }
        self.slices().concat()
    }
}

impl From<Vec<f32>> for Sum {
    fn from(v: Vec<f32>) -> Sum {
        Sum::new(vec![Shared::from(v)])
    }
}

/// Sums are equal when their values are, however they are cut.
impl PartialEq for Sum {
    fn eq(&self, other: &Sum) -> bool {
        self.len() == other.len()
            && self
                .pieces
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.pieces.iter().flat_map(|p| p.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_truncates_across_its_pieces() {
        let whole = Arc::new(Values::F32((0..10).map(|v| v as f32).collect()));
        let pieces = vec![
            Shared::view(&whole, 0..4),
            Shared::from(vec![40.0, 50.0, 60.0]),
            Shared::view(&whole, 7..10),
        ];
        for (len, want) in [
            (
                10,
                vec![0.0, 1.0, 2.0, 3.0, 40.0, 50.0, 60.0, 7.0, 8.0, 9.0],
            ),
            (5, vec![0.0, 1.0, 2.0, 3.0, 40.0]),
            (4, vec![0.0, 1.0, 2.0, 3.0]),
            (0, vec![]),
        ] {
            let mut s = Sum::new(pieces.clone());
            s.truncate(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.value(len.wrapping_sub(1)), want.last().copied());
            assert_eq!(s.value(len), None);
            assert_eq!(s.slices().concat(), want);
            assert_eq!(s.clone().into_vec(), want);
            assert_eq!(s, Sum::from(want));
        }
    }

    #[test]
    fn a_whole_unshared_buffer_is_taken_without_a_copy() {
        let v = vec![1.0f32; 8];
        let at = v.as_ptr();
        let taken = Shared::from(v).into_vec();
        assert_eq!(taken.as_ptr(), at);
        let shared = Shared::from(vec![2.0f32; 8]);
        let kept = shared.clone();
        assert_eq!(shared.into_vec(), *kept, "held elsewhere: copied");
        // A frame read as u64s is read as f32s where it lies, and summed there.
        let mut frame = Values::U64(vec![
            u64::from(1f32.to_bits()) << 32 | u64::from(2f32.to_bits()),
        ]);
        frame.as_mut_slice()[0] += 1.0;
        let at = frame.as_slice().as_ptr();
        let shared = Shared::from(frame);
        assert_eq!(*shared, [3.0, 1.0]);
        assert_eq!(shared.into_values().as_slice().as_ptr(), at);
    }
}
