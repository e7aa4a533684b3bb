//! Picking the compute device natively.

use burn::tensor::Device;

/// A device and the words that describe it to the user.
pub struct Picked {
    /// The device to compute on.
    pub device: Device,
    /// E.g. "wgpu (GPU)" or "CPU (flex)".
    pub label: String,
    /// Set when the GPU was asked for but could not be had.
    pub fallback_reason: Option<String>,
}

/// `cpu` → Burn's flex backend; `gpu` → Burn's wgpu backend, or the CPU with a reason when no
/// adapter can be initialised or the binary was built without the `gpu` feature.
pub fn pick(name: &str) -> Result<Picked, String> {
    match name {
        "cpu" => Ok(on_cpu(None)),
        "gpu" => Ok(gpu()),
        other => Err(format!("unknown device \"{other}\": use cpu or gpu")),
    }
}

#[cfg(feature = "gpu")]
fn gpu() -> Picked {
    match Device::wgpu_options().init() {
        Ok(device) => Picked {
            device,
            label: "GPU (wgpu)".into(),
            fallback_reason: None,
        },
        Err(e) => on_cpu(Some(e.to_string())),
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu() -> Picked {
    on_cpu(Some(
        "this ddpm was built without the `gpu` feature (rebuild with default features)".into(),
    ))
}

/// Burn's flex backend; `fallback_reason` says why, when the GPU was asked for.
fn on_cpu(fallback_reason: Option<String>) -> Picked {
    Picked {
        device: Device::flex(),
        label: "CPU (flex)".into(),
        fallback_reason,
    }
}
