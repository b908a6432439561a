//! `gelu`: the Gaussian error linear unit (erf form).

crate::activation!(Gelu, "gelu", 8.0, gelu);
