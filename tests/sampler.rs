//! Samplers against hand calculations and an oracle model; seeded runs are reproducible.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use ddpm_web::burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_web::rng::BatchNoise;
use ddpm_web::sampler::{Conditioning, EpsModel, Sampler, SamplerConfig, SamplerKind, Variance};
use ddpm_web::{Schedule, UNetConfig};

/// An ε-model computed on the CPU from a closure (x values, t) → ε values.
struct CpuEps<F: Fn(&[f32], usize) -> Vec<f32>>(F);

impl<F: Fn(&[f32], usize) -> Vec<f32>> EpsModel for CpuEps<F> {
    fn eps(&self, x: Tensor<4>, t: usize, _cond: &Conditioning) -> Tensor<4> {
        let shape = x.dims();
        let device = x.device();
        tensor4((self.0)(&to_vec(x), t), shape, &device)
    }
}

/// β_t and ᾱ_t of the paper's schedule, computed here without the library.
fn beta(t: usize) -> f64 {
    1e-4 + (0.02 - 1e-4) * (t as f64 - 1.0) / 999.0
}
fn alpha_bar(t: usize) -> f64 {
    (1..=t).map(|s| 1.0 - beta(s)).product()
}

const SHAPE: [usize; 3] = [1, 2, 3];
const N: usize = 2;
const PER: usize = 6;

fn start(config: &SamplerConfig) -> Sampler {
    Sampler::new(&Schedule::linear_paper(), config, SHAPE, 0, &cpu()).unwrap()
}

fn close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((*x as f64 - y).abs() < tol, "element {i}: {x} vs {y}");
    }
}

#[test]
fn x_t_comes_from_the_seeded_generator() {
    let config = SamplerConfig::new().with_seed(7).with_count(N);
    let s = start(&config);
    let expect = BatchNoise::new(7, N).next(PER);
    assert_eq!(to_vec(s.x().clone()), expect);
    assert_eq!(s.x().dims(), [N, 1, 2, 3]);
}

#[test]
fn one_ddpm_step_matches_algorithm_2_by_hand() {
    let config = SamplerConfig::new()
        .with_seed(7)
        .with_count(N)
        .with_clip_x0(false)
        .with_variance(Variance::FixedLarge);
    let mut s = start(&config);
    let model = CpuEps(|x: &[f32], _| vec![0.5; x.len()]);
    let step = s.step(&model).unwrap();
    assert_eq!(
        (step.index, step.total, step.t, step.t_prev),
        (1, 1000, 1000, 999)
    );

    let mut noise = BatchNoise::new(7, N);
    let x_t = noise.next(PER);
    let z = noise.next(PER);
    let (b, ab) = (beta(1000), alpha_bar(1000));
    // x_{t−1} = (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε) + √β_t z   (Algorithm 2, σ² = β)
    let expect: Vec<f64> = (0..N * PER)
        .map(|i| {
            (x_t[i] as f64 - b / (1.0 - ab).sqrt() * 0.5) / (1.0 - b).sqrt()
                + b.sqrt() * z[i] as f64
        })
        .collect();
    close(&to_vec(step.x), &expect, 1e-5);
    let x0: Vec<f64> = (0..N * PER)
        .map(|i| (x_t[i] as f64 - (1.0 - ab).sqrt() * 0.5) / ab.sqrt())
        .collect();
    close(&to_vec(step.x0), &x0, 2e-2 * 1.0); // x̂₀ at t = T amplifies by 1/√ᾱ_T ≈ 157
}

#[test]
fn one_ddpm_step_with_clipping_uses_the_posterior_mean() {
    let config = SamplerConfig::new()
        .with_seed(3)
        .with_count(N)
        .with_steps(1000)
        .with_clip_x0(true)
        .with_variance(Variance::FixedSmall);
    let mut s = start(&config);
    // Run to t = 10 with ε = 0, then check the step 10 → 9 by hand.
    let zero = CpuEps(|x: &[f32], _| vec![0.0; x.len()]);
    for _ in 0..990 {
        s.step(&zero).unwrap();
    }
    let x_t = to_vec(s.x().clone());
    let model = CpuEps(|x: &[f32], _| x.iter().map(|v| 0.3 * v - 0.1).collect());
    let step = s.step(&model).unwrap();
    assert_eq!((step.t, step.t_prev), (10, 9));

    // Replay the noise: x_T, then one z per step so far.
    let mut noise = BatchNoise::new(3, N);
    for _ in 0..991 {
        noise.next(PER);
    }
    let z = noise.next(PER);
    let (b, ab, ab_prev) = (beta(10), alpha_bar(10), alpha_bar(9));
    let var_tilde = (1.0 - ab_prev) / (1.0 - ab) * b;
    let expect: Vec<f64> = (0..N * PER)
        .map(|i| {
            let x = x_t[i] as f64;
            let eps = 0.3 * x - 0.1;
            let x0 = ((x - (1.0 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0);
            let mean = ab_prev.sqrt() * b / (1.0 - ab) * x0
                + (1.0 - b).sqrt() * (1.0 - ab_prev) / (1.0 - ab) * x;
            mean + var_tilde.sqrt() * z[i] as f64
        })
        .collect();
    close(&to_vec(step.x), &expect, 1e-5);
    assert!(to_vec(step.x0).iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn one_ddim_step_matches_song_et_al_by_hand() {
    let config = SamplerConfig::new()
        .with_kind(SamplerKind::Ddim)
        .with_steps(10)
        .with_eta(0.5)
        .with_seed(11)
        .with_count(N)
        .with_clip_x0(false);
    let mut s = start(&config);
    let model = CpuEps(|x: &[f32], _| x.iter().map(|v| 0.9 * v).collect());
    let step = s.step(&model).unwrap();
    assert_eq!((step.t, step.t_prev, step.total), (1000, 900, 10));

    let mut noise = BatchNoise::new(11, N);
    let x_t = noise.next(PER);
    let z = noise.next(PER);
    let (ab, ab_prev) = (alpha_bar(1000), alpha_bar(900));
    let sigma = 0.5 * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
    let expect: Vec<f64> = (0..N * PER)
        .map(|i| {
            let x = x_t[i] as f64;
            let eps = 0.9 * x;
            let x0 = (x - (1.0 - ab).sqrt() * eps) / ab.sqrt();
            ab_prev.sqrt() * x0 + (1.0 - ab_prev - sigma * sigma).sqrt() * eps + sigma * z[i] as f64
        })
        .collect();
    close(&to_vec(step.x), &expect, 1e-5);
}

/// For data that is a single point x*, the optimal ε(x_t, t) = (x_t − √ᾱ_t x*)/√(1−ᾱ_t): every
/// sampler must land on x* (the last step is noise-free and x̂₀ is exact).
#[test]
fn samplers_with_an_oracle_model_land_on_the_data_point() {
    let target: Vec<f64> = vec![0.5, -0.25, 0.75, -1.0, 0.0, 0.9];
    let oracle = CpuEps(|x: &[f32], t| {
        let ab = alpha_bar(t);
        x.iter()
            .enumerate()
            .map(|(i, v)| ((*v as f64 - ab.sqrt() * target[i % PER]) / (1.0 - ab).sqrt()) as f32)
            .collect()
    });
    let expect: Vec<f64> = (0..N * PER).map(|i| target[i % PER]).collect();
    let configs = [
        SamplerConfig::new()
            .with_kind(SamplerKind::Ddim)
            .with_steps(10),
        SamplerConfig::new()
            .with_kind(SamplerKind::Ddim)
            .with_steps(50)
            .with_eta(1.0),
        SamplerConfig::new().with_clip_x0(false),
        SamplerConfig::new()
            .with_variance(Variance::FixedSmall)
            .with_steps(20),
    ];
    for config in configs {
        let config = config.with_count(N).with_seed(5);
        let x = start(&config).run(&oracle);
        close(&to_vec(x), &expect, 2e-3);
    }
}

fn tiny_unet(device: &Device) -> ddpm_web::UNet {
    device.seed(1);
    UNetConfig::preset("tiny").unwrap().init(device).unwrap()
}

fn ddim(seed: u64, count: usize) -> SamplerConfig {
    SamplerConfig::new()
        .with_kind(SamplerKind::Ddim)
        .with_steps(4)
        .with_seed(seed)
        .with_count(count)
}

fn run_unet(unet: &ddpm_web::UNet, config: &SamplerConfig, device: &Device) -> Vec<f32> {
    let s = Sampler::new(&Schedule::linear_paper(), config, [1, 28, 28], 0, device).unwrap();
    to_vec(s.run(unet))
}

#[test]
fn deterministic_ddim_is_reproducible() {
    let device = cpu();
    let unet = tiny_unet(&device);
    let a = run_unet(&unet, &ddim(42, 3), &device);
    let b = run_unet(&unet, &ddim(42, 3), &device);
    assert_eq!(a, b);
    let c = run_unet(&unet, &ddim(43, 3), &device);
    assert!(max_abs_diff(&a, &c) > 0.1);
    // Sample 0 does not depend on the grid size.
    let one = run_unet(&unet, &ddim(42, 1), &device);
    assert!(max_abs_diff(&one, &a[..one.len()]) < 1e-5);
}

#[test]
fn guidance_combines_conditional_and_unconditional_passes() {
    let device = cpu();
    device.seed(2);
    let unet = UNetConfig::preset("tiny-classes")
        .unwrap()
        .init(&device)
        .unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(BatchNoise::new(1, 2).next(28 * 28), [2, 1, 28, 28]),
        &device,
    );
    let w = 2.0;
    let guided = to_vec(unet.eps(
        x.clone(),
        500,
        &Conditioning {
            class: Some(3),
            guidance: w,
        },
    ));
    let t = Tensor::<1>::full([2], 500.0, &device);
    let label = |k: i64| {
        Some(Tensor::<1, Int>::from_data(
            TensorData::new(vec![k, k], [2]),
            &device,
        ))
    };
    let cond = to_vec(unet.forward(x.clone(), t.clone(), label(3)));
    let uncond = to_vec(unet.forward(x.clone(), t.clone(), label(10)));
    let manual: Vec<f32> = cond
        .iter()
        .zip(&uncond)
        .map(|(c, u)| 3.0 * c - 2.0 * u)
        .collect();
    assert!(max_abs_diff(&guided, &manual) < 1e-4);
    // No labels at all means the "no label" class.
    let none = to_vec(unet.forward(x, t, None));
    assert!(max_abs_diff(&none, &uncond) < 1e-6);
    assert!(
        max_abs_diff(&cond, &uncond) > 1e-6,
        "the label must change ε"
    );
}

#[test]
fn steps_report_the_timesteps_in_order() {
    let config = SamplerConfig::new()
        .with_kind(SamplerKind::Ddim)
        .with_steps(4)
        .with_count(1);
    let mut s = start(&config);
    let zero = CpuEps(|x: &[f32], _| vec![0.0; x.len()]);
    let mut seen = Vec::new();
    while let Some(step) = s.step(&zero) {
        seen.push((step.index, step.t, step.t_prev));
    }
    assert_eq!(
        seen,
        vec![(1, 1000, 750), (2, 750, 500), (3, 500, 250), (4, 250, 0)]
    );
    assert!(s.is_finished() && s.step(&zero).is_none());
}

#[test]
fn bad_options_are_errors() {
    let sched = Schedule::linear_paper();
    let d = cpu();
    let try_new =
        |c: SamplerConfig, classes: usize| Sampler::new(&sched, &c, SHAPE, classes, &d).err();
    let base = SamplerConfig::new().with_count(1);
    assert!(try_new(base.clone().with_steps(0), 0).is_some());
    assert!(try_new(base.clone().with_steps(1001), 0).is_some());
    assert!(try_new(base.clone().with_eta(1.5), 0).is_some());
    assert!(try_new(base.clone().with_count(0), 0).is_some());
    assert!(try_new(base.clone().with_class(Some(1)), 0).is_some());
    assert!(try_new(base.clone().with_class(Some(10)), 10).is_some());
    assert!(try_new(base.clone().with_guidance(2.0), 10).is_some());
    assert!(try_new(base.clone().with_guidance(f64::NAN).with_class(Some(1)), 10).is_some());
    let err = try_new(base.clone().with_class(Some(12)), 10).unwrap();
    assert!(err.to_string().contains("class 12 out of range"), "{err}");
    assert!(try_new(base.with_class(Some(9)).with_guidance(2.0), 10).is_none());
}

#[test]
fn sampler_options_from_json_fill_in_defaults() {
    // The page and widget send partial JSON options; missing fields take the Config defaults.
    let c = SamplerConfig::from_json_partial(r#"{"kind":"Ddim","steps":5,"seed":7,"class":null}"#)
        .unwrap();
    assert_eq!(c.kind, SamplerKind::Ddim);
    assert_eq!((c.steps, c.seed, c.count, c.class), (5, 7, 16, None));
    assert!(c.clip_x0 && c.guidance == 0.0);
    let c = SamplerConfig::from_json_partial(r#"{"variance":"FixedSmall","class":3,"guidance":2}"#)
        .unwrap();
    assert_eq!(
        (c.variance, c.class, c.guidance),
        (Variance::FixedSmall, Some(3), 2.0)
    );
    assert!(
        SamplerConfig::from_json_partial(r#"{"kind":"Fast"}"#)
            .unwrap_err()
            .contains("bad option")
    );
    assert!(
        SamplerConfig::from_json_partial(r#"{"stepz":3}"#)
            .unwrap_err()
            .contains("stepz")
    );
    assert!(SamplerConfig::from_json_partial("[1]").is_err());
    assert!(SamplerConfig::from_json_partial(r#"{"steps":-1}"#).is_err());
}
