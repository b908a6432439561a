//! `tanh`: the hyperbolic tangent.

crate::activation!(Tanh, "tanh", 4.0, tanh);
