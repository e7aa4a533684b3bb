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
/// adapter can be initialised.
pub fn pick(name: &str) -> Result<Picked, String> {
    match name {
        "cpu" => Ok(Picked {
            device: Device::flex(),
            label: "CPU (flex)".into(),
            fallback_reason: None,
        }),
        "gpu" => match Device::wgpu_options().init() {
            Ok(device) => Ok(Picked {
                device,
                label: "GPU (wgpu)".into(),
                fallback_reason: None,
            }),
            Err(e) => Ok(Picked {
                device: Device::flex(),
                label: "CPU (flex)".into(),
                fallback_reason: Some(e.to_string()),
            }),
        },
        other => Err(format!("unknown device \"{other}\": use cpu or gpu")),
    }
}
