//! Where each torch parameter of a fixture goes in brigade's module, and in which layout.
//!
//! torch's `nn.Linear` keeps its weight `[out, in]`, burn's `[in, out]`; torch's
//! `nn.MultiheadAttention` packs the query, key and value projections in one `[3d, d]`
//! `in_proj_weight`, brigade's block keeps three linears; `nn.LayerNorm`'s `weight` and `bias`
//! are burn's `gamma` and `beta`. A conv2d weight is `[out, in, k, k]` on both sides.

use crate::fixture::{Fixture, Tensor, transpose};

/// How a brigade parameter is made from a torch one.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    Same,
    /// A 2-d weight transposed.
    Transposed,
    /// Rows `k·n .. (k+1)·n` of a `[3n, …]` packed tensor (n = its rows / 3), transposed when
    /// 2-d.
    Third(usize),
}

/// One parameter: brigade's path, torch's name, the layout change.
pub type Entry = (String, String, Layout);

/// The parameters of brigade kind `kind` (path as `named_params` gives them) and where torch
/// keeps them.
pub fn entries(kind: &str, bias: bool) -> Vec<Entry> {
    let e = |b: &str, t: &str, l| (b.to_string(), t.to_string(), l);
    use Layout::*;
    match kind {
        "linear" => {
            let mut v = vec![e("linear.weight", "weight", Transposed)];
            if bias {
                v.push(e("linear.bias", "bias", Same));
            }
            v
        }
        "conv2d" => vec![
            e("conv.weight", "weight", Same),
            e("conv.bias", "bias", Same),
        ],
        "layer_norm" => vec![
            e("norm.gamma", "weight", Same),
            e("norm.beta", "bias", Same),
        ],
        "embedding" => vec![e("embedding.weight", "weight", Same)],
        "transformer_block" => block_entries(),
        _ => Vec::new(),
    }
}

fn block_entries() -> Vec<Entry> {
    use Layout::*;
    let mut v = Vec::new();
    for (ln, t) in [("ln1", "ln1"), ("ln2", "ln2")] {
        v.push((format!("block.{ln}.gamma"), format!("{t}.weight"), Same));
        v.push((format!("block.{ln}.beta"), format!("{t}.bias"), Same));
    }
    for (k, name) in ["query", "key", "value"].into_iter().enumerate() {
        v.push((
            format!("block.{name}.weight"),
            "attn.in_proj_weight".into(),
            Third(k),
        ));
        v.push((
            format!("block.{name}.bias"),
            "attn.in_proj_bias".into(),
            Third(k),
        ));
    }
    for (b, t) in [("out", "attn.out_proj"), ("up", "up"), ("down", "down")] {
        v.push((
            format!("block.{b}.weight"),
            format!("{t}.weight"),
            Transposed,
        ));
        v.push((format!("block.{b}.bias"), format!("{t}.bias"), Same));
    }
    v
}

/// Torch tensor `t` in brigade's layout `l`: (shape, values).
pub fn to_brigade(t: &Tensor, l: Layout) -> (Vec<usize>, Vec<f32>) {
    match (l, &t.shape[..]) {
        (Layout::Same, _) => (t.shape.clone(), t.f32.clone()),
        (Layout::Transposed, &[r, c]) => (vec![c, r], transpose(&t.f32, r, c)),
        (Layout::Third(k), &[r3, c]) => {
            let r = r3 / 3;
            let rows = &t.f32[k * r * c..(k + 1) * r * c];
            (vec![c, r], transpose(rows, r, c))
        }
        (Layout::Third(k), &[n3]) => {
            let n = n3 / 3;
            (vec![n], t.f32[k * n..(k + 1) * n].to_vec())
        }
        (l, s) => panic!("layout {l:?} of a tensor shaped {s:?}"),
    }
}

/// Fixture tensor `<prefix><torch name>` of every entry, in brigade's layout, by brigade path.
pub fn brigade_tensors(f: &Fixture, prefix: &str, entries: &[Entry]) -> Vec<(String, Tensor)> {
    entries
        .iter()
        .map(|(b, t, l)| {
            let (shape, f32) = to_brigade(f.get(&format!("{prefix}{t}")), *l);
            let t = Tensor {
                shape,
                f32,
                i64: Vec::new(),
                int: false,
            };
            (b.clone(), t)
        })
        .collect()
}

/// A tensor's shape and values.
pub type Values = (Vec<usize>, Vec<f32>);

/// Brigade's tensors of the entries that make torch's tensor `torch` (one, or a packed
/// projection's three), back in torch's layout: `(shape, values)`. Gradients are compared in
/// torch's tensors, so a packed one is judged against its own scale as a whole (the key bias's
/// gradient is zero in exact arithmetic, softmax being blind to a shift of a row's scores: both
/// sides give rounding noise there, small only beside the query's and value's).
pub fn to_torch(torch: &str, entries: &[Entry], brigade: &dyn Fn(&str) -> Values) -> Values {
    let mine: Vec<&Entry> = entries.iter().filter(|e| e.1 == torch).collect();
    let mut shape = Vec::new();
    let mut values = Vec::new();
    for (path, _, layout) in &mine {
        let (s, v) = brigade(path);
        match (layout, &s[..]) {
            (Layout::Same, _) => (shape, values) = (s, v),
            (Layout::Transposed, &[r, c]) => (shape, values) = (vec![c, r], transpose(&v, r, c)),
            (Layout::Third(_), &[r, c]) => {
                shape = vec![3 * c, r];
                values.extend(transpose(&v, r, c));
            }
            (Layout::Third(_), &[n]) => {
                shape = vec![3 * n];
                values.extend(v);
            }
            (l, s) => panic!("layout {l:?} of a tensor shaped {s:?}"),
        }
    }
    (shape, values)
}
