//! brigade's stages: burn modules for every layer kind, the compute of one pipeline stage,
//! synthetic data behind the [`Batches`] trait, checkpoints and the wire codec.
//!
//! Two stages chained by hand — what the engine does across processes:
//!
//! ```
//! use brigade_stages::{Stage, SyntheticData};
//! use burn::prelude::Device;
//!
//! let toml = r#"
//!     [model]
//!     input = [16]
//!     layers = [ { kind = "linear", out = 32 }, { kind = "relu" }, { kind = "linear", out = 4 } ]
//!     [train]
//!     batch = 8
//!     microbatches = 2
//!     [[hosts]]
//!     name = "local"
//!     address = "127.0.0.1"
//!     devices = ["cpu", "cpu"]
//! "#;
//! let topo = brigade_partitioner::parse("example.toml", toml, &[]).unwrap();
//! let device = Device::flex();
//! let mut first = Stage::new(&topo, 0, 0..2, &device);
//! let mut last = Stage::new(&topo, 1, 2..3, &device);
//! let data = SyntheticData::new(&topo);
//! for mb in 0..2 {
//!     let hidden = first.forward(mb, data.inputs(0, mb, first.device())).unwrap();
//!     last.forward(mb, hidden).unwrap();
//!     let (loss, grad) = last.backward_loss(mb, &data.targets(0, mb, last.device())).unwrap();
//!     assert!(loss > 0.0);
//!     assert!(first.backward(mb, grad.unwrap()).unwrap().is_none());
//! }
//! first.optimizer_step().unwrap();
//! last.optimizer_step().unwrap();
//! assert_eq!(last.step(), 1);
//! ```

pub mod alloc;
pub mod checkpoint;
pub mod codec;
pub mod data;
pub mod device;
pub mod hf;
pub mod loss;
pub mod optim;
pub mod params;
pub mod precision;
pub mod profile;
pub mod reference;
pub mod stage;
pub mod sum;

/// Activations, deterministic initialisation and the layer kinds live in `brigade_layers`.
pub use brigade_layers::{act, init, map_float};

pub use act::Act;
pub use data::{Batches, DataError, Role, Share, SyntheticData};
pub use loss::Target;
pub use stage::{BucketSlots, MODEL_INPUT, Stage, StageError};
