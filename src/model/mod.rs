//! The U-Net noise model ε_θ, configured by [`UNetConfig`].

pub mod blocks;
mod config;
mod embedding;
mod unet;

pub use blocks::upsample_nearest2x;
pub use config::{ConfigError, UNetConfig};
pub use embedding::{frequencies, timestep_embedding};
pub use unet::UNet;
