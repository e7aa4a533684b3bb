//! Sampling speed of the U-Net presets on the CPU (and the GPU when one is found), printed as
//! steps/s. Run with `cargo bench`; it measures and prints, it asserts nothing.

#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;

#[cfg(not(target_arch = "wasm32"))]
use ddpm_web::burn::tensor::Device;
#[cfg(not(target_arch = "wasm32"))]
use ddpm_web::sampler::{Sampler, SamplerConfig, SamplerKind};
#[cfg(not(target_arch = "wasm32"))]
use ddpm_web::{Schedule, UNetConfig};

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn bench(preset: &str, device: &Device, label: &str, count: usize, steps: usize) {
    let Some(config) = UNetConfig::preset(preset) else {
        return;
    };
    let Ok(unet) = config.init(device) else {
        return;
    };
    let schedule = Schedule::linear_paper();
    let sc = SamplerConfig::new()
        .with_kind(SamplerKind::Ddim)
        .with_steps(1000)
        .with_count(count);
    let shape = [config.image_channels, config.image_size, config.image_size];
    let Ok(mut sampler) = Sampler::new(&schedule, &sc, shape, config.num_classes, device) else {
        return;
    };
    for _ in 0..2 {
        sampler.step(&unet);
    }
    let _ = device.sync();
    let start = Instant::now();
    for _ in 0..steps {
        sampler.step(&unet);
        let _ = device.sync();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{preset:<12} {label:<10} batch {count:>3}: {:>8.2} steps/s  {:>8.1} ms/step",
        steps as f64 / secs,
        secs * 1e3 / steps as f64
    );
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let cpu = Device::flex();
    for preset in ["tiny", "mnist-small", "mnist", "emoji"] {
        for count in [1, 16] {
            bench(preset, &cpu, "cpu(flex)", count, 5);
        }
    }
    if std::env::var("DDPM_BENCH_GPU").is_ok() {
        bench_gpu();
    }
}

#[cfg(all(not(target_arch = "wasm32"), feature = "gpu"))]
fn bench_gpu() {
    match Device::wgpu_options().init() {
        Ok(gpu) => {
            for preset in ["mnist-small", "mnist", "emoji"] {
                for count in [1, 16, 64] {
                    bench(preset, &gpu, "gpu(wgpu)", count, 20);
                }
            }
        }
        Err(e) => println!("no GPU benchmark: {e}"),
    }
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "gpu")))]
fn bench_gpu() {
    println!("no GPU benchmark: built without the `gpu` feature");
}
