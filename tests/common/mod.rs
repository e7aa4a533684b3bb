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

/// A new directory under the system's temp folder, removed when dropped. (Not the `tempfile`
/// crate: as a dev-dependency it turns on default features of `fastrand` and `rustix`, which
/// Burn shares, and so `cargo test` would rebuild the whole Burn stack that `cargo build`
/// already built.)
pub struct TempDir(std::path::PathBuf);

pub fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "ddpm-web-test-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&path).expect("create a temp dir");
    TempDir(path)
}

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
