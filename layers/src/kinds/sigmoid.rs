//! `sigmoid`: the logistic function `1 / (1 + e^-x)`.

crate::activation!(Sigmoid, "sigmoid", 4.0, sigmoid);
