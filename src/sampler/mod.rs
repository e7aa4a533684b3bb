//! Reverse diffusion: DDPM ancestral sampling (Algorithm 2) and DDIM, one shared engine.

mod config;
mod engine;
mod model;

pub use config::{SamplerConfig, SamplerKind, Variance};
pub use engine::{Sampler, SamplerError, Step, StepCoefs, plan_steps};
pub use model::{Conditioning, EpsModel};
