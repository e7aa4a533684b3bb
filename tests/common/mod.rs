//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ddpm_web::burn::tensor::{Device, Tensor, TensorData};
use ddpm_web::{ModelManifest, ScheduleConfig, UNetConfig};

pub fn cpu() -> Device {
    Device::flex()
}

pub fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

pub fn tensor4(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, shape), device)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tiny model's manifest (random weights, T = 1000 linear).
pub fn tiny_manifest(config: UNetConfig) -> ModelManifest {
    ModelManifest::new(config, ScheduleConfig::new()).with_dataset("synthetic".into())
}
