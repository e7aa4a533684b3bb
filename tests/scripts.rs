//! `scripts/checkpoints.sh`: a run kept in the repository and restored elsewhere resumes exactly.
#![cfg(all(feature = "train", not(target_arch = "wasm32")))]

use std::path::Path;
use std::process::{Command, Output};

use ddpm_web::burn::tensor::Device;
use ddpm_web::weights::{load_from_bytes, parameter_values};

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny synthetic run trained with the CLI up to `steps` (resumed when `resume`).
fn train(run: &Path, steps: u32, resume: bool) {
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic",
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--warmup",
        "2",
        "--checkpoint-every",
        "3",
        "--sample-every",
        "0",
        "-q",
        "--run",
        run.to_str().unwrap(),
        "--steps",
        &steps,
    ];
    if resume {
        args.push("--resume");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(&args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("run ddpm");
    ok("ddpm train", out);
}

fn script(kept: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/checkpoints.sh"
        ))
        .args(args)
        .env("DDPM_CHECKPOINTS", kept)
        .output()
        .expect("run scripts/checkpoints.sh")
}

fn weights(file: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(file).unwrap();
    parameter_values(&load_from_bytes(&bytes, &Device::flex()).unwrap().unet)
}

#[test]
fn a_kept_checkpoint_restored_elsewhere_resumes_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    let straight = dir.path().join("a/tiny");
    train(&straight, 6, false);

    // Train 3 steps, keep the checkpoint, lose the run folder, restore it on "another machine".
    let first = dir.path().join("b/tiny");
    train(&first, 3, false);
    let said = ok("keep", script(&kept, &["keep", first.to_str().unwrap()]));
    assert!(said.contains("at step 3"), "{said}");
    assert!(kept.join("tiny/state.json").exists());
    assert!(kept.join("tiny/train.log").exists());
    std::fs::remove_dir_all(&first).unwrap();
    let listed = ok("list", script(&kept, &["list"]));
    assert!(listed.contains("tiny step 3"), "{listed}");

    let second = dir.path().join("c/tiny");
    ok(
        "restore",
        script(&kept, &["restore", second.to_str().unwrap()]),
    );
    // Never over a run that has a checkpoint of its own.
    let again = script(&kept, &["restore", second.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a checkpoint"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    train(&second, 6, true);

    for file in ["model.safetensors", "ema.safetensors"] {
        let a = weights(&straight.join("checkpoint").join(file));
        let b = weights(&second.join("checkpoint").join(file));
        assert_eq!(a.len(), b.len());
        for ((name, _, va), (_, _, vb)) in a.iter().zip(&b) {
            assert_eq!(
                va, vb,
                "{file}: {name} differs after keep → restore → resume"
            );
        }
    }
    // The restored log goes on from the kept one.
    let log = std::fs::read_to_string(second.join("train.log")).unwrap();
    assert!(log.contains("step 3 ") && log.contains("step 6 "), "{log}");
}

#[test]
fn keeping_a_run_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    let out = script(&kept, &["keep", dir.path().join("none").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no checkpoint in"), "{err}");
    let out = script(
        &kept,
        &["restore", dir.path().join("none").to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no kept checkpoint"));
}
