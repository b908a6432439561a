//! `relu`: `max(x, 0)`.

crate::activation!(Relu, "relu", 1.0, relu);
