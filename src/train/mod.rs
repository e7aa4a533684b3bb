//! Native training (feature `train`): data loaders, the Algorithm 1 loop with Adam, warm-up,
//! global-norm clipping and EMA, atomic checkpoints with exact resume, export, and averaging of
//! a run's exports.

pub mod average;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod eval;
pub mod optim;
pub mod sample_set;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{ResumeChanges, TrainOptions, TrainReport, export, train};
