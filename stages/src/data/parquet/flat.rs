//! Rows laid out as the tensors they become: built on the reader threads, so the compute
//! thread only slices a micro-batch and copies it once into a tensor.

use super::columns::Layout;
use super::decode::Row;
use crate::act::Act;
use crate::data::Role;
use crate::loss::Target;
use burn::prelude::*;

/// Shapes of one sample's input and of the model's output.
#[derive(Debug, Clone)]
pub struct Shapes {
    pub input: Vec<usize>,
    pub output: Vec<usize>,
}

/// A run of samples: inputs (features or token ids) and targets (class ids, next tokens or
/// float values), each row-major, as the rank's role needs them.
#[derive(Debug, Default)]
pub struct Flat {
    pub rows: usize,
    x: Vec<f32>,
    tokens: Vec<i64>,
    classes: Vec<i64>,
    y: Vec<f32>,
}

impl Flat {
    pub fn of(rows: &[Row], layout: &Layout, role: Role) -> Flat {
        let mut f = Flat {
            rows: rows.len(),
            ..Flat::default()
        };
        let ints_label = layout.label.as_ref().is_some_and(|l| l.ints);
        for r in rows {
            if role.inputs {
                match layout.seq {
                    Some(t) => f.tokens.extend_from_slice(&r.ids[..t]),
                    None => f.x.extend_from_slice(&r.x),
                }
            }
            if role.targets {
                match (layout.seq, ints_label) {
                    (Some(t), _) => f.classes.extend_from_slice(&r.ids[1..=t]),
                    (None, true) => f.classes.push(r.ids[0]),
                    (None, false) => f.y.extend_from_slice(&r.y),
                }
            }
        }
        f
    }

    /// Rows `[a, a + n)` as the first chunk's input.
    pub fn inputs(&self, a: usize, n: usize, layout: &Layout, s: &Shapes, device: &Device) -> Act {
        match layout.seq {
            Some(t) => Act::from_tokens(self.tokens[a * t..(a + n) * t].to_vec(), &[n, t], device),
            None => {
                let w: usize = s.input.iter().product();
                let mut shape = vec![n];
                shape.extend_from_slice(&s.input);
                Act::from_f32(self.x[a * w..(a + n) * w].to_vec(), &shape, device)
            }
        }
    }

    /// Rows `[a, a + n)` as the last chunk's targets.
    pub fn targets(
        &self,
        a: usize,
        n: usize,
        layout: &Layout,
        s: &Shapes,
        device: &Device,
    ) -> Target {
        let ints_label = layout.label.as_ref().is_some_and(|l| l.ints);
        match (layout.seq, ints_label) {
            (Some(t), _) => {
                let ids = self.classes[a * t..(a + n) * t].to_vec();
                Target::Tokens(Tensor::from_data(TensorData::new(ids, vec![n, t]), device))
            }
            (None, true) => {
                let ids = self.classes[a..a + n].to_vec();
                Target::Classes(Tensor::from_data(TensorData::new(ids, vec![n]), device))
            }
            (None, false) => {
                let w: usize = s.output.iter().product();
                let mut shape = vec![n];
                shape.extend_from_slice(&s.output);
                Target::Values(Act::from_f32(
                    self.y[a * w..(a + n) * w].to_vec(),
                    &shape,
                    device,
                ))
            }
        }
    }
}
