//! `scripts/checkpoints.sh`: a run kept in the repository and restored elsewhere resumes exactly.
#![cfg(all(feature = "train", not(target_arch = "wasm32")))]

mod common;

use std::path::{Path, PathBuf};
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

/// The checkout under test. Cargo runs integration tests in the package root, whereas
/// `env!("CARGO_MANIFEST_DIR")` names the checkout the test was first compiled in: with one
/// target dir shared between clones (`scripts/env.sh`), cargo reuses the binary of another
/// clone whose sources match, and that clone's scripts would be the ones tested.
fn root() -> PathBuf {
    std::env::current_dir().expect("the current directory")
}

fn script(kept: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(root().join("scripts/checkpoints.sh"))
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
    let dir = common::tempdir();
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
    let dir = common::tempdir();
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

/// A scratch setting for `scripts/gpu-session.sh` on this machine: its home (the "GPU machine"),
/// kept checkpoints and `$OUT` in a temporary folder; `None` without ../shared/data/mnist.
struct GpuSession {
    _dir: common::TempDir,
    home: PathBuf,
    kept: PathBuf,
    out: PathBuf,
    data: PathBuf,
}

impl GpuSession {
    fn new() -> Option<Self> {
        let data = root().join("../shared/data");
        if !data.join("mnist/train-images-idx3-ubyte.gz").exists() {
            eprintln!("skipped: no ../shared/data/mnist");
            return None;
        }
        let dir = common::tempdir();
        let (home, kept, out) = (
            dir.path().join("home"),
            dir.path().join("kept"),
            dir.path().join("out"),
        );
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        Some(Self {
            _dir: dir,
            home,
            kept,
            out,
            data,
        })
    }

    /// `bash scripts/gpu-session.sh ARGS` with its device and extra `ddpm train` options.
    fn run(&self, device: &str, train_args: &str, args: &[&str]) -> Output {
        self.run_env(device, train_args, args, &[])
    }

    /// As `run`, with more environment variables.
    fn run_env(
        &self,
        device: &str,
        train_args: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Output {
        Command::new("bash")
            .arg(root().join("scripts/gpu-session.sh"))
            .args(args)
            .envs(env.iter().copied())
            .env("DDPM_GPU_HOME", &self.home)
            .env("DDPM_GPU_DEVICE", device)
            .env("DDPM_BIN", env!("CARGO_BIN_EXE_ddpm"))
            .env("DDPM_DATA", &self.data)
            .env("DDPM_CHECKPOINTS", &self.kept)
            .env("DDPM_GPU_TRAIN_ARGS", train_args)
            .env("OUT", &self.out)
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .expect("run scripts/gpu-session.sh")
    }
}

/// `scripts/gpu-session.sh` with its device set to the CPU: a run resumed from a kept
/// checkpoint at the GPU batch, found still running by a second call, stopped with a checkpoint,
/// returned as `$OUT/NAME.tar.*` and landed back among the kept checkpoints.
#[test]
fn the_gpu_session_script_resumes_collects_stops_and_lands_a_run() {
    let root = root();
    let Some(gpu) = GpuSession::new() else {
        return;
    };
    let (home, kept, out) = (&gpu.home, &gpu.kept, &gpu.out);
    keep_shipped_mnist(&root, kept);
    let (start, _) = step_of(&kept.join("mnist/state.json"));
    let train_args = format!("--steps {}", start + 2);
    let session_on = |device: &str, args: &[&str]| gpu.run(device, &train_args, args);
    let session = |args: &[&str]| session_on("cpu", args);

    let said = ok("train", session(&["train", "0", "mnist"]));
    assert!(said.contains("mnist: training"), "{said}");
    assert!(
        out.join("mnist.tar.0").exists(),
        "the kept checkpoint comes back at once"
    );
    let said = ok("train again", session(&["train", "0", "mnist"]));
    assert!(said.contains("still training"), "{said}");
    // `start` leaves a run going and brings nothing back.
    std::fs::remove_file(out.join("mnist.tar.0")).unwrap();
    let said = ok("start", session(&["start", "mnist"]));
    assert!(said.contains("still training"), "{said}");
    assert!(!out.join("mnist.tar.0").exists());
    ok("stop", session(&["stop", "mnist"]));
    let said = ok("land", session(&["land", out.to_str().unwrap()]));
    assert!(said.contains("landed mnist"), "{said}");
    // The landed checkpoint is the one the stopped run wrote: resumed at the GPU batch, at most
    // the two steps it was allowed.
    let (step, batch) = step_of(&kept.join("mnist/state.json"));
    assert_eq!(batch, 256);
    assert!((start..=start + 2).contains(&step), "{start} → {step}");
    assert!(!kept.join(".mnist.new").exists());
    let bad = session(&["train", "0", "cifar"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown model 'cifar'"));

    // Asked for the GPU where there is none (no adapter, or a binary without the `gpu`
    // feature), a run would train on the CPU at a fraction of the speed for the whole call: the
    // script stops it and says why instead.
    let no_gpu = session_on("gpu", &["train", "0", "mnist"]);
    let said = String::from_utf8_lossy(&no_gpu.stdout);
    if said.contains("mnist: training") {
        eprintln!("skipped the no-GPU case: this machine has a GPU adapter");
        ok("stop", session(&["stop", "mnist"]));
        return;
    }
    assert!(!no_gpu.status.success(), "{said}");
    let why = String::from_utf8_lossy(&no_gpu.stderr);
    assert!(why.contains("mnist: no GPU adapter"), "{why}");
    assert!(
        !Command::new("pgrep")
            .args([
                "-f",
                &format!("train --dataset mnist --run {}/runs/mnist ", home.display()),
            ])
            .status()
            .expect("pgrep")
            .success(),
        "the fallen-back run is stopped"
    );
}

/// The repository's kept `mnist` checkpoint, copied among the scratch kept checkpoints.
fn keep_shipped_mnist(root: &Path, kept: &Path) {
    std::fs::create_dir_all(kept.join("mnist")).unwrap();
    for f in [
        "state.json",
        "model.safetensors",
        "ema.safetensors",
        "optim.safetensors",
    ] {
        std::fs::copy(
            root.join("checkpoints/mnist").join(f),
            kept.join("mnist").join(f),
        )
        .unwrap();
    }
}

/// A checkpoint's step and batch size.
fn step_of(state: &Path) -> (u64, u64) {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    (
        s["step"].as_u64().unwrap(),
        s["config"]["batch_size"].as_u64().unwrap(),
    )
}

/// `round` (one lease's cycle) trains a run, stops it and evaluates its export, unconditional
/// and guided (here 10 samples of 5 steps), inside its deadline; CubeCL's kernel cache comes
/// back beside them, `land` keeps it, and the next call puts it where CubeCL looks.
#[test]
fn the_gpu_session_round_trains_evaluates_and_brings_the_kernel_cache_back() {
    let root = root();
    let Some(gpu) = GpuSession::new() else {
        return;
    };
    let (kept, out) = (&gpu.kept, &gpu.out);
    keep_shipped_mnist(&root, kept);
    let (start, _) = step_of(&kept.join("mnist/state.json"));
    let train_args = format!("--steps {}", start + 2);
    let scratch = gpu.home.with_file_name("scratch");
    let (tuned, cache) = (scratch.join("target/environment"), scratch.join("cache"));
    std::fs::create_dir_all(&tuned).unwrap();
    std::fs::write(tuned.join("tuned"), "kernels").unwrap();
    let env = [
        ("DDPM_GPU_SAMPLES", Path::new("10")),
        ("DDPM_GPU_STEPS", Path::new("5")),
        ("DDPM_CUBECL_ENV", tuned.as_path()),
        ("DDPM_GPU_CACHE", cache.as_path()),
    ];
    let session = |args: &[&str]| gpu.run_env("cpu", &train_args, args, &env);

    let said = ok("round", session(&["round", "0", "600", "mnist"]));
    assert!(said.contains("mnist: stopped; evaluating"), "{said}");
    let quality = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["quality"].clone()
    };
    let uncond = quality("mnist-uncond.json");
    assert_eq!(uncond["samples"], 10);
    assert_eq!(uncond["guidance"], 0.0);
    let guided = quality("mnist-guided.json");
    assert_eq!(guided["guidance"], 2.0);
    assert!(guided["labelled_as_class"].is_number(), "{guided}");
    for f in [
        "mnist.tar.0",
        "mnist.safetensors",
        "mnist-uncond.st",
        "mnist-guided.st",
    ] {
        assert!(out.join(f).exists(), "{f} comes back");
    }

    // Landed, the cache is kept; a later call (a fresh machine) puts it back in place.
    let said = ok("land", session(&["land", out.to_str().unwrap()]));
    assert!(said.contains("landed CubeCL's cache"), "{said}");
    assert_eq!(
        std::fs::read_to_string(cache.join("environment/tuned")).unwrap(),
        "kernels"
    );
    std::fs::remove_dir_all(&tuned).unwrap();
    ok("stop", session(&["stop", "mnist"]));
    assert_eq!(
        std::fs::read_to_string(tuned.join("tuned")).unwrap(),
        "kernels"
    );

    // Past its deadline, an evaluation is cut off (and brings back nothing) rather than
    // outrunning the call, which then fails, after the checkpoint is back.
    std::fs::remove_file(out.join("mnist.tar.0")).unwrap();
    let late = session(&["round", "0", "1", "mnist"]);
    let why = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success(), "{why}");
    assert!(why.contains("no time left for this evaluation"), "{why}");
    assert!(out.join("mnist.tar.0").exists());
}

/// A run named DATASET-PRESET (`mnist-small`) is a run of its own: it starts from scratch with
/// that preset on that dataset, beside (not from) the dataset's kept checkpoint, and comes back
/// and lands under its own name.
#[test]
fn the_gpu_session_script_starts_a_preset_run_under_its_own_name() {
    let Some(gpu) = GpuSession::new() else {
        return;
    };
    let (kept, out) = (&gpu.kept, &gpu.out);
    let session = |args: &[&str]| {
        gpu.run(
            "cpu",
            "--steps 2 --checkpoint-every 1 --sample-every 0",
            args,
        )
    };
    let said = ok("train", session(&["train", "0", "mnist-small"]));
    assert!(said.contains("mnist-small: training"), "{said}");
    ok("stop", session(&["stop", "mnist-small"]));
    let said = ok("land", session(&["land", out.to_str().unwrap()]));
    assert!(said.contains("landed mnist-small"), "{said}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kept.join("mnist-small/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["config"]["dataset"], "mnist");
    assert_eq!(state["config"]["batch_size"], 256);
    // The preset's layout, not the shipped `mnist` one (base 16, mults 1,2,4).
    assert_eq!(
        state["config"]["model"]["channel_mults"],
        serde_json::json!([1, 2, 2])
    );
    assert!(!kept.join("mnist").exists(), "the mnist run is left alone");
}

/// `git` in `dir`, which must succeed; its standard output.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    ok(&format!("git {args:?}"), out)
}

/// `gpu-session.sh slim` takes the kept checkpoints out of what a device call sends (git's
/// index and the ignore rules), leaving the files; `unslim` tracks them again with whatever
/// `land` changed, and both are safe to run twice.
#[test]
fn the_gpu_session_script_slims_the_repository_for_a_call_and_back() {
    let dir = common::tempdir();
    let repo = dir.path();
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::create_dir_all(repo.join("checkpoints/mnist")).unwrap();
    std::fs::copy(
        root().join("scripts/gpu-session.sh"),
        repo.join("scripts/gpu-session.sh"),
    )
    .unwrap();
    std::fs::write(repo.join("checkpoints/mnist/state.json"), "{\"step\": 1}").unwrap();
    std::fs::write(repo.join("README.md"), "kept\n").unwrap();
    git(repo, &["init", "-q"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "init"]);
    let session = |args: &[&str]| {
        Command::new("bash")
            .arg(repo.join("scripts/gpu-session.sh"))
            .args(args)
            .output()
            .expect("run gpu-session.sh")
    };
    // What a call sends: tracked files and untracked ones git does not ignore.
    let sent = || {
        git(
            repo,
            &["ls-files", "--cached", "--others", "--exclude-standard"],
        )
    };

    for _ in 0..2 {
        let said = ok("slim", session(&["slim"]));
        assert!(said.contains("carry checkpoints/mnist "), "{said}");
    }
    let files = sent();
    assert!(!files.contains("checkpoints"), "{files}");
    assert!(files.contains("README.md"), "{files}");
    assert!(repo.join("checkpoints/mnist/state.json").exists());

    // A landed checkpoint, then back.
    std::fs::write(repo.join("checkpoints/mnist/state.json"), "{\"step\": 2}").unwrap();
    std::fs::create_dir_all(repo.join("checkpoints/fashion")).unwrap();
    std::fs::write(repo.join("checkpoints/fashion/state.json"), "{}").unwrap();
    for _ in 0..2 {
        ok("unslim", session(&["unslim"]));
    }
    assert!(sent().contains("checkpoints/mnist/state.json"));
    let status = git(repo, &["status", "--porcelain"]);
    assert_eq!(
        status, "A  checkpoints/fashion/state.json\nM  checkpoints/mnist/state.json\n",
        "only the landed checkpoints change"
    );
    let exclude = std::fs::read_to_string(repo.join(".git/info/exclude")).unwrap_or_default();
    assert!(!exclude.contains("/checkpoints/"), "{exclude}");
}
