//! Choosing the compute backend in the browser: WebGPU when it can be had, else the CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;

/// The backend in use and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendInfo {
    /// "webgpu" or "cpu".
    pub kind: &'static str,
    /// Adapter description ("CPU (flex)" on the fallback).
    pub adapter: String,
    /// Why the CPU is used although WebGPU was wanted (empty otherwise).
    pub note: String,
}

/// A ready device, plus a flag the browser sets when the GPU device is lost.
pub struct Backend {
    pub device: Device,
    pub info: BackendInfo,
    pub lost: Arc<AtomicBool>,
}

impl Backend {
    /// True once the WebGPU device has been lost.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

fn cpu(note: String) -> Backend {
    Backend {
        device: Device::flex(),
        info: BackendInfo {
            kind: "cpu",
            adapter: "CPU (flex)".into(),
            note,
        },
        lost: Arc::new(AtomicBool::new(false)),
    }
}

/// `prefer`: "cpu" → the CPU; "auto"/"webgpu" → WebGPU through Burn's wgpu runtime, falling
/// back to the CPU with a note when there is no adapter or the device is refused.
pub async fn init(prefer: &str) -> Backend {
    if prefer == "cpu" {
        return cpu(String::new());
    }
    if !has_webgpu() {
        return cpu("this browser does not offer WebGPU (navigator.gpu is missing)".into());
    }
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let lost = Arc::new(AtomicBool::new(false));
            let flag = lost.clone();
            setup
                .device
                .set_device_lost_callback(move |_reason, _message| {
                    flag.store(true, Ordering::SeqCst);
                });
            let mut adapter = info.name.trim().to_string();
            if adapter.is_empty() {
                adapter = info.driver.trim().to_string();
            }
            if adapter.is_empty() {
                adapter = "WebGPU adapter".into();
            }
            if !info.driver_info.trim().is_empty() && !adapter.contains(info.driver_info.trim()) {
                adapter = format!("{adapter} ({})", info.driver_info.trim());
            }
            Backend {
                device,
                info: BackendInfo {
                    kind: "webgpu",
                    adapter,
                    note: String::new(),
                },
                lost,
            }
        }
        Err(e) => {
            web_sys::console::warn_1(&format!("ddpm-web: WebGPU init failed: {e}").into());
            cpu(fallback_reason(&e))
        }
    }
}

/// A sentence for the page; the full error goes to the console.
fn fallback_reason(e: &burn::tensor::wgpu::WgpuInitError) -> String {
    use burn::tensor::wgpu::WgpuInitError as E;
    match e {
        E::AdapterUnavailable { .. } => "WebGPU is on, but no GPU adapter is available".into(),
        E::RequestDevice { message } => format!("the GPU refused to create a device ({message})"),
        other => format!("WebGPU could not start ({other})"),
    }
}

/// Whether `navigator.gpu` exists in this global scope (window or worker).
fn has_webgpu() -> bool {
    let global = js_sys::global();
    let navigator = js_sys::Reflect::get(&global, &"navigator".into()).unwrap_or_default();
    if navigator.is_undefined() || navigator.is_null() {
        return false;
    }
    js_sys::Reflect::get(&navigator, &"gpu".into())
        .map(|gpu| !gpu.is_undefined() && !gpu.is_null())
        .unwrap_or(false)
}
