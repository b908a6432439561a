//! brigade's stages: burn modules for every layer kind, the compute of one pipeline stage,
//! the single-process reference trainer, synthetic data and the wire codec.

pub mod act;
pub mod alloc;
pub mod block;
pub mod checkpoint;
pub mod codec;
pub mod init;
pub mod layer;

pub use act::Act;
pub mod data;
pub mod device;
pub mod loss;
pub mod optim;
pub mod params;
pub mod profile;
pub mod stage;

pub use data::SyntheticData;
pub use loss::Target;
pub use stage::{Stage, StageError};
pub mod reference;
