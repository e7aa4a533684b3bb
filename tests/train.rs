//! A tiny end-to-end training run on synthetic images: the loss falls, checkpoints resume
//! exactly, export → sample works, a corrupt checkpoint is a clear error.
#![cfg(feature = "train")]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ddpm_web::UNetConfig;
use ddpm_web::burn::tensor::Device;
use ddpm_web::train::data::synthetic;
use ddpm_web::train::{TrainConfig, TrainOptions, export, train};
use ddpm_web::weights::{StorageDtype, load_from_bytes, load_from_path, parameter_values};

fn config(steps: u64) -> TrainConfig {
    let model = UNetConfig::preset("tiny").unwrap().with_num_classes(4);
    TrainConfig::new("synthetic".into(), model)
        .with_steps(steps)
        .with_batch_size(16)
        .with_lr(2e-3)
        .with_warmup_steps(5)
        .with_checkpoint_every(10)
        .with_sample_every(0)
        .with_seed(3)
}

fn options(run: &Path) -> TrainOptions {
    TrainOptions {
        run_dir: run.to_path_buf(),
        data_dir: "../shared/data".into(),
        device: Device::flex(),
        device_label: "test CPU".into(),
        quiet: true,
        stop: Arc::new(AtomicBool::new(false)),
        dataset: Some(synthetic(64, 28, 5)),
        resume_changes: Default::default(),
    }
}

/// Burn's CPU backend draws initial weights from one process-wide generator, so tests that
/// seed it and build models take turns (a resumed run must start from the same weights).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn loss_decreases_and_resume_matches_an_uninterrupted_run() {
    let _turn = serial();
    let dir = common::tempdir();
    let straight = dir.path().join("straight");
    let report = train(config(60), false, options(&straight)).unwrap();
    assert_eq!(report.step, 60);
    let first = mean(&report.losses[..10]);
    let last = mean(&report.losses[50..]);
    assert!(
        last < 0.8 * first,
        "loss did not fall: {first:.4} → {last:.4}"
    );

    // 30 steps, stop, resume to 60: same weights as the straight run.
    let split = dir.path().join("split");
    train(config(30), false, options(&split)).unwrap();
    let again = train(config(30), false, options(&split)).unwrap_err();
    assert!(again.contains("--resume"), "{again}");
    let resumed = train(config(60), true, options(&split)).unwrap();
    assert_eq!(resumed.step, 60);
    assert_eq!(resumed.losses.len(), 30);
    let a = std::fs::read(straight.join("checkpoint/model.safetensors")).unwrap();
    let b = std::fs::read(split.join("checkpoint/model.safetensors")).unwrap();
    let pa = parameter_values(&load_from_bytes(&a, &Device::flex()).unwrap().unet);
    let pb = parameter_values(&load_from_bytes(&b, &Device::flex()).unwrap().unet);
    for ((name, _, va), (_, _, vb)) in pa.iter().zip(&pb) {
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name} differs by {diff} after resume");
    }
    for (x, y) in report.losses[30..].iter().zip(&resumed.losses) {
        assert!(
            (x - y).abs() < 1e-5,
            "losses differ after resume: {x} vs {y}"
        );
    }
}

#[test]
fn export_then_sample_and_corrupt_checkpoints() {
    let _turn = serial();
    let dir = common::tempdir();
    let run = dir.path().join("run");
    train(config(10), false, options(&run)).unwrap();
    let out = dir.path().join("model.safetensors");
    let manifest = export(&run, &out, StorageDtype::F16).unwrap();
    assert_eq!(manifest.training.steps, 10);
    assert_eq!(manifest.dataset, "synthetic");
    assert_eq!(manifest.class_names.len(), 4);
    let loaded = load_from_path(&out, &Device::flex()).unwrap();
    assert_eq!(loaded.manifest.training.ema_decay, Some(0.9999));

    let grid = dir.path().join("grid.png");
    let status = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args([
            "sample",
            "--weights",
            out.to_str().unwrap(),
            "--sampler",
            "ddim",
            "--steps",
            "3",
        ])
        .args([
            "--count",
            "4",
            "--class",
            "square",
            "--guidance",
            "1",
            "-q",
            "--out",
            grid.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(grid.exists());

    // A truncated checkpoint file: resume fails with a message naming it; nothing panics.
    let model = run.join("checkpoint/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let err = train(config(20), true, options(&run)).unwrap_err();
    assert!(
        err.contains("checkpoint model") && err.contains("truncated or corrupt"),
        "{err}"
    );
    // A corrupt state file.
    std::fs::write(run.join("checkpoint/state.json"), b"{ not json").unwrap();
    let err = train(config(20), true, options(&run)).unwrap_err();
    assert!(err.contains("corrupt checkpoint state"), "{err}");
    // No checkpoint at all.
    let err = train(config(20), true, options(&dir.path().join("empty"))).unwrap_err();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn interrupted_runs_write_a_checkpoint() {
    let _turn = serial();
    let dir = common::tempdir();
    let run = dir.path().join("run");
    let opts = options(&run);
    opts.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = train(config(100), false, opts).unwrap();
    assert!(report.interrupted);
    assert!(run.join("checkpoint/state.json").exists());
}

#[test]
fn resume_keeps_the_checkpoint_settings_but_applies_the_given_changes() {
    let _turn = serial();
    use ddpm_web::train::{ResumeChanges, checkpoint};
    let dir = common::tempdir();
    let run = dir.path().join("run");
    train(config(10), false, options(&run)).unwrap();
    // A different lr in the config passed to a resumed run is ignored (the checkpoint wins)…
    train(config(20).with_lr(0.5), true, options(&run)).unwrap();
    let state = checkpoint::load(&run).unwrap().state;
    assert_eq!((state.step, state.config.lr), (20, 2e-3));
    // …unless it is asked for as a change.
    let mut opts = options(&run);
    opts.resume_changes = ResumeChanges {
        lr: Some(1e-4),
        label_dropout: Some(0.5),
        checkpoint_every: Some(5),
        ..Default::default()
    };
    train(config(25), true, opts).unwrap();
    let state = checkpoint::load(&run).unwrap().state;
    assert_eq!(state.step, 25);
    assert_eq!(state.config.lr, 1e-4);
    assert_eq!(state.config.label_dropout, 0.5);
    assert_eq!(state.config.checkpoint_every, 5);
    assert_eq!(state.config.batch_size, 16);
    // The flip setting in force is recorded (the synthetic set's default: none).
    assert_eq!(state.config.flip, Some(false));
    // A new batch size (and flips): the data order goes on from where it stopped (25 steps × 16
    // images of a 64-image set: 6 epochs and 16 images in), 10 steps × 24 images further.
    let before = state.batcher.clone();
    let mut opts = options(&run);
    opts.resume_changes = ResumeChanges {
        batch_size: Some(24),
        flip: Some(true),
        ..Default::default()
    };
    let report = train(config(35), true, opts).unwrap();
    assert_eq!(report.losses.len(), 10);
    let state = checkpoint::load(&run).unwrap().state;
    assert_eq!(state.config.batch_size, 24);
    assert_eq!(state.config.flip, Some(true));
    let seen = |b: &ddpm_web::train::data::BatcherState| b.epoch * 64 + b.pos as u64;
    assert_eq!(seen(&before), 25 * 16);
    assert_eq!(seen(&state.batcher), 25 * 16 + 10 * 24);
    // A change out of range is refused before any step, and the checkpoint stays as it was.
    let mut opts = options(&run);
    opts.resume_changes = ResumeChanges {
        label_dropout: Some(1.5),
        ..Default::default()
    };
    let err = train(config(40), true, opts).unwrap_err();
    assert!(err.contains("label dropout must be in [0, 1]"), "{err}");
    assert_eq!(checkpoint::load(&run).unwrap().state.step, 35);
}

#[test]
fn a_diverging_run_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let _turn = serial();
    use ddpm_web::train::{ResumeChanges, checkpoint};
    let dir = common::tempdir();
    let run = dir.path().join("run");
    train(config(10), false, options(&run)).unwrap();
    let before = std::fs::read(run.join("checkpoint").join("model.safetensors")).unwrap();
    // An absurd learning rate overflows the weights within a few steps; no checkpoint falls due
    // before step 100, so the losses are read in batches (and once more at the end).
    let mut opts = options(&run);
    opts.resume_changes = ResumeChanges {
        lr: Some(1e30),
        checkpoint_every: Some(100),
        ..Default::default()
    };
    let err = train(config(60), true, opts).unwrap_err();
    assert!(err.contains("the loss became"), "{err}");
    assert!(err.contains("last good checkpoint"), "{err}");
    let step: u64 = err
        .split("at step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    assert!((11..=60).contains(&step), "{err}");
    // The checkpoint from step 10 is untouched and still loads.
    assert_eq!(checkpoint::load(&run).unwrap().state.step, 10);
    let after = std::fs::read(run.join("checkpoint").join("model.safetensors")).unwrap();
    assert!(before == after);
}

#[test]
fn data_loaders_read_the_shared_datasets_or_explain() {
    use ddpm_web::train::data::{Split, load};
    let data = Path::new("../shared/data");
    if data.join("mnist/t10k-images-idx3-ubyte.gz").exists() {
        let ds = load("mnist", data, Split::Test).unwrap();
        assert_eq!(ds.len(), 10_000);
        assert_eq!(ds.shape, [1, 28, 28]);
        assert!(ds.images.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(!ds.flip_ok, "digits are never flipped");
        let fashion = load("fashion", data, Split::Test).unwrap();
        assert_eq!(fashion.class_names[9], "Ankle boot");
        assert!(!fashion.flip_ok, "Fashion-MNIST's shoes all face one way");
    }
    let missing = load("mnist", Path::new("/nonexistent"), Split::Train).unwrap_err();
    assert!(
        missing.contains("/nonexistent/mnist/train-images-idx3-ubyte.gz"),
        "{missing}"
    );
    let dir = common::tempdir();
    std::fs::create_dir_all(dir.path().join("mnist")).unwrap();
    std::fs::write(
        dir.path().join("mnist/train-images-idx3-ubyte.gz"),
        b"not gzip",
    )
    .unwrap();
    let bad = load("mnist", dir.path(), Split::Train).unwrap_err();
    assert!(bad.contains("not a valid gzip"), "{bad}");
    assert!(
        load("cifar", data, Split::Train)
            .unwrap_err()
            .contains("unknown dataset")
    );
}

#[test]
fn discretized_decoder_is_a_distribution_over_256_levels() {
    use ddpm_web::train::eval::discretized_gaussian_log_likelihood as ll;
    for &(mean, log_scale) in &[(0.0, -3.0), (0.3, -5.0), (-0.9, -1.0), (0.999, -6.0)] {
        let total: f64 = (0..256)
            .map(|k| ll(k as f64 / 127.5 - 1.0, mean, log_scale).exp())
            .sum();
        assert!(
            (total - 1.0).abs() < 1e-6,
            "mean {mean}: probabilities sum to {total}"
        );
    }
    // A sharp decoder centred on the pixel puts almost all mass on it.
    assert!(ll(0.2, 0.2, -9.0).exp() > 0.99);
}

#[test]
fn elbo_of_a_tiny_model_decomposes_and_the_stride_estimate_agrees() {
    let _turn = serial();
    use ddpm_web::sampler::Variance;
    use ddpm_web::train::eval::{ElboOptions, elbo};
    let device = Device::flex();
    device.seed(1);
    let unet = UNetConfig::preset("tiny").unwrap().init(&device).unwrap();
    let schedule = ddpm_web::Schedule::linear_paper();
    let ds = synthetic(4, 28, 9);
    let opts = |stride| ElboOptions {
        batch: 4,
        stride,
        variance: Variance::FixedLarge,
        seed: 5,
    };
    let exact = elbo(
        &unet,
        &schedule,
        &ds.images,
        ds.shape,
        opts(1),
        &device,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(exact.images, 4);
    assert!(exact.bits_per_dim.is_finite() && exact.bits_per_dim > 0.0);
    assert!((exact.prior + exact.diffusion + exact.decoder - exact.bits_per_dim).abs() < 1e-9);
    // L_T for pixels of ±1: ½ ᾱ_T x² / ln 2 per dimension (tiny).
    assert!(exact.prior > 0.0 && exact.prior < 3e-5, "{}", exact.prior);
    let strided = elbo(
        &unet,
        &schedule,
        &ds.images,
        ds.shape,
        opts(10),
        &device,
        |_, _| {},
    )
    .unwrap();
    let rel = (strided.diffusion - exact.diffusion).abs() / exact.diffusion;
    assert!(
        rel < 0.25,
        "stride-10 estimate {} vs exact {}",
        strided.diffusion,
        exact.diffusion
    );
}

#[test]
fn frechet_distance_matches_the_closed_form_for_diagonal_covariances() {
    use ddpm_web::train::classifier::{frechet_distance, symmetric_eigen};
    // Four points (±a, 0), (0, ±b) around m: mean m, covariance diag(2a²/3, 2b²/3) exactly.
    let set = |m: [f64; 2], a: f64, b: f64| -> Vec<Vec<f64>> {
        vec![
            vec![m[0] + a, m[1]],
            vec![m[0] - a, m[1]],
            vec![m[0], m[1] + b],
            vec![m[0], m[1] - b],
        ]
    };
    let (x, y) = (set([0.0, 0.0], 1.0, 2.0), set([1.0, -2.0], 3.0, 0.5));
    let sd = |v: f64| (2.0 * v * v / 3.0).sqrt();
    let expected = 1.0 + 4.0 + (sd(1.0) - sd(3.0)).powi(2) + (sd(2.0) - sd(0.5)).powi(2);
    assert!((frechet_distance(&x, &y) - expected).abs() < 1e-9);
    assert!(frechet_distance(&x, &x).abs() < 1e-9);
    // Eigen-decomposition: A v = λ v.
    let a = vec![
        vec![4.0, 1.0, 0.5],
        vec![1.0, 3.0, -0.2],
        vec![0.5, -0.2, 1.0],
    ];
    let (l, v) = symmetric_eigen(a.clone());
    for k in 0..3 {
        for i in 0..3 {
            let av: f64 = (0..3).map(|j| a[i][j] * v[j][k]).sum();
            assert!((av - l[k] * v[i][k]).abs() < 1e-9);
        }
    }
}

#[test]
fn classifier_learns_the_synthetic_shapes_and_round_trips() {
    let _turn = serial();
    use ddpm_web::train::classifier::{
        ClassifierConfig, argmax, load, probe, save, train_classifier,
    };
    let device = Device::flex();
    let data = synthetic(64, 28, 1);
    let config = ClassifierConfig::new(1, 28, 4);
    let (model, loss) = train_classifier(&data, &config, 120, 16, 2, &device, |_, _| {}).unwrap();
    assert!(loss < 0.5, "final loss {loss}");
    let test = synthetic(40, 28, 7);
    let (probs, feats) = probe(&model, &test.images, test.shape, &device).unwrap();
    let correct = probs
        .iter()
        .zip(&test.labels)
        .filter(|&(p, &y)| argmax(p) == y as usize)
        .count();
    assert!(correct >= 36, "{correct}/40 correct");
    assert_eq!(feats[0].len(), 128);
    let bytes = save(&model, &config, "synthetic").unwrap();
    let (again, config2, name) = load(&bytes, &device).unwrap();
    assert_eq!((config2, name.as_str()), (config, "synthetic"));
    let (probs2, _) = probe(&again, &test.images, test.shape, &device).unwrap();
    assert!(
        (probs[0][0] - probs2[0][0]).abs() < 1e-2,
        "f16 storage changes little"
    );
}
