//! ddpm-web: Denoising Diffusion Probabilistic Models (Ho, Jain & Abbeel 2020) with Burn,
//! running in the browser on WebGPU (wasm32) and natively (CLI, training).
//!
//! One core serves both builds: [`schedule`] (β/ᾱ/posterior tables), [`model`] (the U-Net
//! ε_θ), [`sampler`] (DDPM and DDIM on one step engine), [`weights`] (the self-describing
//! weights file) and [`image`] (pixels). Only the shells differ: `web` in the browser, the
//! `ddpm` binary natively, and `train` behind the feature of that name.

pub mod image;
pub mod model;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

#[cfg(all(feature = "train", not(target_arch = "wasm32")))]
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use model::{UNet, UNetConfig};
pub use sampler::{Sampler, SamplerConfig, SamplerKind, Step, Variance};
pub use schedule::{Schedule, ScheduleConfig, ScheduleKind};
pub use weights::{LoadedModel, ModelManifest, StorageDtype, TrainingInfo, WeightsError};

/// Re-export of Burn, so users of the library name the same version.
pub use burn;
