//! The GPU (wgpu) agrees with the CPU (flex): training steps (loss, gradient norm and the
//! parameters after a few Adam updates, from the same weights and batch), the U-Net forward and
//! a few tensor layouts it uses, and the loss on the device against one computed on the host.
//!
//! Runs only with `DDPM_GPU_TESTS=1` and a wgpu adapter (a real GPU, or lavapipe), since a
//! software Vulkan device makes it slow; without them it says so and passes. Needs the `gpu`
//! feature (on by default).
#![cfg(all(feature = "train", feature = "gpu"))]

use std::sync::OnceLock;

use ddpm_web::burn::optim::GradientsParams;
use ddpm_web::burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_web::train::optim::{
    AdamState, AdamStep, adam_step, clip_scale, flatten, flatten_grads, mse_loss, norm, unflatten,
};
use ddpm_web::weights::{StorageDtype, load_from_bytes, parameter_values, save_to_bytes};
use ddpm_web::{ModelManifest, ScheduleConfig, UNetConfig};

/// The wgpu device, initialised once per process (a second `init` fails), or `None` with a
/// message when the tests are not asked for or no adapter exists.
fn gpu() -> Option<Device> {
    static GPU: OnceLock<Result<Device, String>> = OnceLock::new();
    if std::env::var("DDPM_GPU_TESTS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set DDPM_GPU_TESTS=1 to compare the GPU with the CPU");
        return None;
    }
    match GPU.get_or_init(|| Device::wgpu_options().init().map_err(|e| e.to_string())) {
        Ok(d) => Some(d.clone()),
        Err(e) => {
            eprintln!("skipped: no wgpu adapter ({e})");
            None
        }
    }
}

const BS: usize = 4;
const PER: usize = 28 * 28;

/// A fixed, device-independent batch for step `s`: x_t, ε, t and labels (10 = "no label").
fn batch(s: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<i64>) {
    let x = (0..BS * PER)
        .map(|i| (((i * 7919 + s * 31) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let eps = (0..BS * PER)
        .map(|i| ((((i * 104_729 + s * 17) % 2000) as f32 / 1000.0) - 1.0) * 1.5)
        .collect();
    (x, eps, vec![1.0, 250.0, 600.0, 999.0], vec![0, 3, 9, 10])
}

fn upload(
    (x, eps, t, y): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<i64>),
    d: &Device,
) -> (Tensor<4>, Tensor<4>, Tensor<1>, Tensor<1, Int>) {
    (
        Tensor::from_data(TensorData::new(x, [BS, 1, 28, 28]), d),
        Tensor::from_data(TensorData::new(eps, [BS, 1, 28, 28]), d),
        Tensor::from_data(TensorData::new(t, [BS]), d),
        Tensor::from_data(TensorData::new(y, [BS]), d),
    )
}

struct StepResult {
    losses: Vec<f64>,
    norms: Vec<f64>,
    scales: Vec<f64>,
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// `steps` training steps as the trainer takes them: clipping by a multiplier left on the device,
/// and the losses and gradient norms read only at the end (their inputs kept alive until then).
fn run_steps(device: &Device, weights: &[u8], steps: usize) -> StepResult {
    let ad = device.clone().autodiff();
    let mut model = load_from_bytes(weights, &ad).expect("load").unet;
    let mut adam = AdamState::default();
    let mut w = flatten(&model);
    let mut pending = Vec::new();
    for s in 0..steps {
        let (x, eps, t, y) = upload(batch(s), &ad);
        let pred = model.forward(x, t, Some(y));
        let loss = mse_loss(&pred, &eps);
        let grads = loss.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let g = flatten_grads(&model, &grads);
        let step = AdamStep {
            lr: 1e-3,
            grad_scale: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        // A limit below every norm seen here, so that the clipping multiplier is in play.
        let scale = clip_scale(&g, 0.05).expect("clipping is on");
        let n = norm(&g);
        w = adam_step(w, g, &mut adam, step, Some(scale.clone()));
        model = unflatten(model, &w);
        pending.push((loss.inner(), n, scale, pred.inner(), eps.inner()));
    }
    let read = |v: Vec<Tensor<1>>| -> Vec<f64> {
        values(Tensor::cat(v, 0))
            .into_iter()
            .map(f64::from)
            .collect()
    };
    let losses = read(pending.iter().map(|p| p.0.clone()).collect());
    let norms = read(pending.iter().map(|p| p.1.clone()).collect());
    let scales = read(pending.iter().map(|p| p.2.clone()).collect());
    drop(pending);
    StepResult {
        losses,
        norms,
        scales,
        params: parameter_values(&model),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A `tiny-classes` U-Net initialised on the CPU with `seed`, as a weights file.
fn tiny_weights(seed: u64) -> Vec<u8> {
    let cpu = Device::flex();
    cpu.seed(seed);
    let cfg = UNetConfig::preset("tiny-classes").expect("preset");
    let model = cfg.init(&cpu).expect("init");
    let manifest = ModelManifest::new(cfg, ScheduleConfig::new());
    save_to_bytes(&model, &manifest, StorageDtype::F32).expect("save")
}

#[test]
fn gpu_training_steps_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    let weights = tiny_weights(5);
    let steps = 3;
    let c = run_steps(&cpu, &weights, steps);
    let g = run_steps(&gpu, &weights, steps);
    eprintln!("cpu losses {:?} norms {:?}", c.losses, c.norms);
    eprintln!("gpu losses {:?} norms {:?}", g.losses, g.norms);
    let mut worst = (0.0f64, String::new());
    for ((name, _, a), (_, _, b)) in c.params.iter().zip(&g.params) {
        let d = max_diff(a, b) as f64;
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!(
        "largest parameter difference after {steps} steps: {:.3e} in {}",
        worst.0, worst.1
    );
    assert!(
        c.norms.iter().all(|&n| n > 0.05),
        "clipping was not in play: norms {:?}",
        c.norms
    );
    for s in 0..steps {
        assert!(close(c.losses[s], g.losses[s], 1e-3), "loss at step {s}");
        assert!(close(c.norms[s], g.norms[s], 1e-3), "grad norm at step {s}");
        // The clipping multiplier, on both devices, against min(1, 0.05 / (‖g‖ + 1e-6)).
        let expected = 0.05 / (c.norms[s] + 1e-6);
        assert!(close(c.scales[s], expected, 1e-4), "cpu scale at step {s}");
        assert!(close(g.scales[s], expected, 1e-3), "gpu scale at step {s}");
    }
    // Adam moves each weight by at most ~lr per step; a wrong update moves it by far more.
    assert!(
        worst.0 < 1e-4,
        "parameters differ by {:.3e} in {}",
        worst.0,
        worst.1
    );
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

#[test]
fn gpu_ops_match_cpu() {
    use ddpm_web::burn::tensor::activation::silu;
    use ddpm_web::model::blocks::upsample_nearest2x;
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    let (b, c, h, w) = (2usize, 8usize, 7usize, 7usize);
    let data: Vec<f32> = (0..b * c * h * w)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let temb: Vec<f32> = (0..b * c).map(|i| i as f32 / 7.0 - 1.0).collect();
    type Case = fn(Tensor<4>, Tensor<2>) -> Tensor<4>;
    let cases: Vec<(&str, Case)> = vec![
        ("upsample", |x, _| {
            upsample_nearest2x(silu(x).mul_scalar(2.0)).add_scalar(1.0)
        }),
        ("temb broadcast", |x, t| {
            let [b, c, _, _] = x.dims();
            silu(x) + silu(t).reshape([b, c, 1, 1])
        }),
        ("attention layout", |x, _| {
            let [b, c, h, w] = x.dims();
            let s = silu(x.clone())
                .reshape([b, c, h * w])
                .swap_dims(1, 2)
                .mul_scalar(3.0);
            x + s.swap_dims(1, 2).reshape([b, c, h, w])
        }),
    ];
    let mut bad = Vec::new();
    for (name, f) in cases {
        let run = |d: &Device| {
            let x = Tensor::<4>::from_data(TensorData::new(data.clone(), [b, c, h, w]), d);
            let t = Tensor::<2>::from_data(TensorData::new(temb.clone(), [b, c]), d);
            values(f(x, t))
        };
        let (a, g) = (run(&cpu), run(&gpu));
        let d = max_diff(&a, &g);
        eprintln!("{name}: max difference {d:.3e}");
        if d > 1e-4 {
            bad.push(name);
        }
    }
    // The whole U-Net forward, inference mode.
    let bytes = tiny_weights(9);
    let run = |d: &Device| {
        let m = load_from_bytes(&bytes, d).expect("load").unet;
        let x = Tensor::<4>::from_data(TensorData::new(data.repeat(2), [2, 1, 28, 28]), d);
        let t = Tensor::<1>::from_data(TensorData::new(vec![5.0f32, 700.0], [2]), d);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 10], [2]), d);
        values(m.forward(x, t, Some(y)))
    };
    let (a, g) = (run(&cpu), run(&gpu));
    let d = max_diff(&a, &g);
    eprintln!("U-Net forward: max difference {d:.3e}");
    if d > 1e-3 {
        bad.push("U-Net forward");
    }
    assert!(bad.is_empty(), "GPU differs from CPU in: {bad:?}");
}

#[test]
fn gpu_loss_matches_host() {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::flex();
    let bytes = tiny_weights(9);
    let eps = batch(0).1;
    for (label, d) in [
        ("cpu", cpu.clone()),
        ("gpu", gpu.clone()),
        ("cpu-ad", cpu.clone().autodiff()),
        ("gpu-ad", gpu.clone().autodiff()),
    ] {
        let m = load_from_bytes(&bytes, &d).expect("load").unet;
        let (xt, et, t, y) = upload(batch(0), &d);
        let pred = m.forward(xt, t, Some(y));
        let p = values(pred.clone());
        let host: f64 = p
            .iter()
            .zip(&eps)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / p.len() as f64;
        let dev = mse_loss(&pred, &et).into_scalar::<f32>() as f64;
        eprintln!("{label}: loss on the device {dev:.6}, on the host {host:.6}");
        assert!(close(dev, host, 1e-4), "{label}: {dev} vs {host}");
    }
}
