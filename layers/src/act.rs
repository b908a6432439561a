//! Tensors flowing between layers and stages. Their rank depends on the layer (features,
//! tokens, images), so activations are an enum over the ranks brigade's layers produce.

use burn::prelude::*;
use burn::tensor::FloatDType;

/// A batch of activations, or of gradients with the same shape.
#[derive(Debug, Clone)]
pub enum Act {
    /// Token ids `[batch, tokens]` (the input of an embedding).
    Tokens(Tensor<2, Int>),
    /// `[batch, features]`.
    F2(Tensor<2>),
    /// `[batch, tokens, dim]`.
    F3(Tensor<3>),
    /// `[batch, channels, height, width]`.
    F4(Tensor<4>),
}

/// Applies the same rank-generic expression to whichever float tensor an [`Act`] holds.
#[macro_export]
macro_rules! map_float {
    ($act:expr, |$t:ident| $body:expr) => {
        match $act {
            $crate::act::Act::F2($t) => $crate::act::Act::F2($body),
            $crate::act::Act::F3($t) => $crate::act::Act::F3($body),
            $crate::act::Act::F4($t) => $crate::act::Act::F4($body),
            $crate::act::Act::Tokens(_) => panic!("float operation on token ids"),
        }
    };
}

impl Act {
    /// Shape including the batch dimension.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Act::Tokens(t) => t.dims().to_vec(),
            Act::F2(t) => t.dims().to_vec(),
            Act::F3(t) => t.dims().to_vec(),
            Act::F4(t) => t.dims().to_vec(),
        }
    }

    /// The device the values live on.
    pub fn device(&self) -> Device {
        match self {
            Act::Tokens(t) => t.device(),
            Act::F2(t) => t.device(),
            Act::F3(t) => t.device(),
            Act::F4(t) => t.device(),
        }
    }

    /// The activation in `dtype` (token ids stay integers): training in bf16 or f16 casts
    /// activations, parameters stay f32 (see `brigade_stages::precision`).
    pub fn cast(self, dtype: FloatDType) -> Act {
        match self {
            Act::Tokens(t) => Act::Tokens(t),
            other => map_float!(other, |t| t.cast(dtype)),
        }
    }

    /// The float dtype of the activation (f32 for token ids, which are not cast).
    pub fn float_dtype(&self) -> FloatDType {
        let d = match self {
            Act::Tokens(_) => return FloatDType::F32,
            Act::F2(t) => t.dtype(),
            Act::F3(t) => t.dtype(),
            Act::F4(t) => t.dtype(),
        };
        d.into()
    }

    pub fn is_tokens(&self) -> bool {
        matches!(self, Act::Tokens(_))
    }

    /// Builds an activation from f32 values and a shape (batch included).
    pub fn from_f32(values: Vec<f32>, shape: &[usize], device: &Device) -> Act {
        let data = TensorData::new(values, shape.to_vec());
        match shape.len() {
            2 => Act::F2(Tensor::from_data(data, device)),
            3 => Act::F3(Tensor::from_data(data, device)),
            4 => Act::F4(Tensor::from_data(data, device)),
            r => panic!("activations have rank 2 to 4, not {r}"),
        }
    }

    /// Builds token ids `[batch, tokens]`.
    pub fn from_tokens(values: Vec<i64>, shape: &[usize], device: &Device) -> Act {
        Act::Tokens(Tensor::from_data(
            TensorData::new(values, shape.to_vec()),
            device,
        ))
    }

    /// The values as host data (a blocking read-back).
    pub fn to_data(&self) -> TensorData {
        match self {
            Act::Tokens(t) => t.to_data(),
            Act::F2(t) => t.to_data(),
            Act::F3(t) => t.to_data(),
            Act::F4(t) => t.to_data(),
        }
    }

    /// The values as host data, consuming the activation: no copy when its storage is its own
    /// (a received message's, on the CPU).
    pub fn into_data(self) -> TensorData {
        match self {
            Act::Tokens(t) => t.into_data(),
            Act::F2(t) => t.into_data(),
            Act::F3(t) => t.into_data(),
            Act::F4(t) => t.into_data(),
        }
    }

    /// Marks a received activation as a leaf whose gradient the stage must return.
    pub fn require_grad(self) -> Act {
        match self {
            Act::Tokens(t) => Act::Tokens(t),
            other => map_float!(other, |t| t.require_grad()),
        }
    }

    /// The same values without autodiff: a plain device tensor (what crosses to the I/O thread,
    /// so autodiff's bookkeeping only ever runs on the compute thread).
    pub fn inner(self) -> Act {
        match self {
            Act::Tokens(t) => Act::Tokens(t.inner()),
            Act::F2(t) => Act::F2(t.inner()),
            Act::F3(t) => Act::F3(t.inner()),
            Act::F4(t) => Act::F4(t.inner()),
        }
    }

    /// The same values with autodiff enabled (unchanged if they have it already).
    pub fn autodiff(self) -> Act {
        match self {
            Act::Tokens(t) => Act::Tokens(t.autodiff()),
            Act::F2(t) => Act::F2(t.autodiff()),
            Act::F3(t) => Act::F3(t.autodiff()),
            Act::F4(t) => Act::F4(t.autodiff()),
        }
    }

    /// Cuts the activation from any graph it belongs to.
    pub fn detach(self) -> Act {
        match self {
            Act::Tokens(t) => Act::Tokens(t),
            other => map_float!(other, |t| t.detach()),
        }
    }

    /// `sum(self * grad)`: backward from this scalar seeds `self`'s gradient with `grad`.
    pub fn dot(&self, grad: &Act) -> Tensor<1> {
        match (self, grad) {
            (Act::F2(a), Act::F2(g)) => (a.clone() * g.clone()).sum(),
            (Act::F3(a), Act::F3(g)) => (a.clone() * g.clone()).sum(),
            (Act::F4(a), Act::F4(g)) => (a.clone() * g.clone()).sum(),
            (a, g) => panic!(
                "gradient rank {:?} does not match activation {:?}",
                g.dims(),
                a.dims()
            ),
        }
    }

    /// `parts` joined along dimension `dim` (batch included: 0 is the batch).
    pub fn cat(parts: Vec<Act>, dim: usize) -> Act {
        match parts.first() {
            Some(Act::F2(_)) => Act::F2(Tensor::cat(parts.into_iter().map(Act::f2).collect(), dim)),
            Some(Act::F3(_)) => Act::F3(Tensor::cat(parts.into_iter().map(Act::f3).collect(), dim)),
            Some(Act::F4(_)) => Act::F4(Tensor::cat(parts.into_iter().map(Act::f4).collect(), dim)),
            _ => panic!("concatenating token ids or nothing"),
        }
    }

    fn f2(self) -> Tensor<2> {
        match self {
            Act::F2(t) => t,
            other => panic!("expected rank 2, got {:?}", other.dims()),
        }
    }

    fn f3(self) -> Tensor<3> {
        match self {
            Act::F3(t) => t,
            other => panic!("expected rank 3, got {:?}", other.dims()),
        }
    }

    fn f4(self) -> Tensor<4> {
        match self {
            Act::F4(t) => t,
            other => panic!("expected rank 4, got {:?}", other.dims()),
        }
    }

    /// Zeros of this activation's shape (the gradient of an input nothing depended on).
    pub fn zeros_like(&self) -> Act {
        map_float!(self.clone(), |t| t.zeros_like())
    }

    /// This leaf's gradient in `grads`, if it has one.
    pub fn grad(&self, grads: &burn::tensor::Gradients) -> Option<Act> {
        match self {
            Act::Tokens(_) => None,
            Act::F2(t) => t.grad(grads).map(Act::F2),
            Act::F3(t) => t.grad(grads).map(Act::F3),
            Act::F4(t) => t.grad(grads).map(Act::F4),
        }
    }
}

/// The element-wise sum of two activations of one shape (merges, and gradients of a tensor sent
/// to several consumers).
impl std::ops::Add for Act {
    type Output = Act;

    fn add(self, other: Act) -> Act {
        match (self, other) {
            (Act::F2(a), Act::F2(b)) => Act::F2(a + b),
            (Act::F3(a), Act::F3(b)) => Act::F3(a + b),
            (Act::F4(a), Act::F4(b)) => Act::F4(a + b),
            (a, b) => panic!("adding {:?} and {:?}", a.dims(), b.dims()),
        }
    }
}
