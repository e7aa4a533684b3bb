//! The `ddpm` command end to end: init → info → sample (PNG, per-sample PNGs, GIF) and errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .output()
        .expect("run ddpm")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "ddpm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small conditional U-Net config file (4 classes, like the synthetic dataset).
const SMALL_CONFIG: &str = r#"{"image_channels":1,"image_size":28,"base_channels":8,
    "channel_mults":[1,2],"res_blocks":1,"attention_resolutions":[],"groups":4,"dropout":0.0,
    "num_classes":4}"#;

/// `ddpm init` a model for the synthetic dataset (a preset name or a config file) into `out`.
#[cfg(feature = "train")]
fn init_synthetic(preset: &str, out: &Path) {
    ok(&ddpm(&[
        "init",
        "--preset",
        preset,
        "--dataset",
        "synthetic",
        "--out",
        out.to_str().unwrap(),
    ]));
}

/// `ddpm train-classifier` on the synthetic dataset for `steps` steps (batch 16) into `out`.
#[cfg(feature = "train")]
fn train_synthetic_classifier(steps: u32, out: &Path) {
    ok(&ddpm(&[
        "train-classifier",
        "--dataset",
        "synthetic",
        "--steps",
        &steps.to_string(),
        "--batch-size",
        "16",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]));
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn init_info_sample_end_to_end() {
    let dir = common::tempdir();
    let w = dir.path().join("tiny.safetensors");
    let ws = w.to_str().unwrap();
    ok(&ddpm(&[
        "init",
        "--preset",
        "tiny-classes",
        "--seed",
        "3",
        "--out",
        ws,
    ]));

    let info = ddpm(&["info", ws]);
    ok(&info);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("parameters") && text.contains("28×28"),
        "{text}"
    );
    let json = ddpm(&["info", "--json", ws]);
    ok(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["manifest"]["model"]["num_classes"], 10);
    assert!(v["parameters"].as_u64().unwrap() > 1000);

    let grid = dir.path().join("grid.png");
    let gif = dir.path().join("anim.gif");
    let each = dir.path().join("each");
    // One guided DDIM run, written as a grid, a GIF and single PNGs.
    let base = [
        "sample",
        "--weights",
        ws,
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--count",
        "6",
        "--seed",
        "1",
        "--class",
        "3",
        "--guidance",
        "2",
    ];
    let out = ddpm(
        &[
            &base[..],
            &[
                "--out",
                grid.to_str().unwrap(),
                "--gif",
                gif.to_str().unwrap(),
                "--each",
                each.to_str().unwrap(),
                "--quiet",
            ],
        ]
        .concat(),
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("steps/s"));
    // 6 tiles → 2 rows × 3 columns of 28 px with 2 px padding.
    assert_eq!(png_size(&grid), (3 * 28 + 4 * 2, 2 * 28 + 3 * 2));
    for i in 0..6 {
        assert_eq!(png_size(&each.join(format!("sample_{i:04}.png"))), (28, 28));
    }
    let gif_bytes = std::fs::read(&gif).unwrap();
    assert_eq!(&gif_bytes[..6], b"GIF89a");
    let mut decoder = gif::DecodeOptions::new()
        .read_info(std::io::Cursor::new(gif_bytes))
        .unwrap();
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 6, "x_T plus one frame per step");

    // Same seed, same pixels.
    let grid2 = dir.path().join("grid2.png");
    ok(&ddpm(
        &[&base[..], &["--out", grid2.to_str().unwrap(), "-q"]].concat(),
    ));
    assert_eq!(
        std::fs::read(&grid).unwrap(),
        std::fs::read(&grid2).unwrap()
    );
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_files_and_options_give_one_line_errors() {
    let dir = common::tempdir();
    let w = dir.path().join("w.safetensors");
    let ws = w.to_str().unwrap();
    ok(&ddpm(&["init", "--preset", "tiny", "--out", ws]));
    let out_png = dir.path().join("x.png");
    let out_s = out_png.to_str().unwrap();

    let bytes = std::fs::read(&w).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = one_line_error(&ddpm(&[
        "sample",
        "--weights",
        cut.to_str().unwrap(),
        "--out",
        out_s,
    ]));
    assert!(err.contains("truncated or corrupt"), "{err}");
    let err = one_line_error(&ddpm(&["info", cut.to_str().unwrap()]));
    assert!(err.contains("truncated or corrupt"), "{err}");

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello").unwrap();
    one_line_error(&ddpm(&[
        "sample",
        "--weights",
        junk.to_str().unwrap(),
        "--out",
        out_s,
    ]));

    // Bad options: one line that names the problem (any of the given words).
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--weights", "/no/such/file"], &["/no/such/file"]),
        (
            &["--weights", ws, "--class", "3"],
            &["without labels", "no classes"],
        ),
        (&["--weights", ws, "--steps", "5000"], &["steps"]),
        (&["--weights", ws, "--device", "tpu"], &["tpu"]),
    ];
    for (args, words) in cases {
        let err = one_line_error(&ddpm(&[&["sample"], args, &["--out", out_s]].concat()));
        assert!(words.iter().any(|w| err.contains(w)), "{args:?}: {err}");
    }
    assert!(!out_png.exists(), "nothing is written on error");
}

#[test]
fn a_model_config_file_works_where_a_preset_does_and_bad_ones_are_explained() {
    let dir = common::tempdir();
    let cfg = dir.path().join("model.json");
    std::fs::write(&cfg, SMALL_CONFIG).unwrap();
    let w = dir.path().join("m.safetensors");
    ok(&ddpm(&[
        "init",
        "--preset",
        cfg.to_str().unwrap(),
        "--out",
        w.to_str().unwrap(),
    ]));
    let info = ddpm(&["info", w.to_str().unwrap(), "--json"]);
    ok(&info);
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["manifest"]["model"]["base_channels"], 8);
    assert_eq!(json["manifest"]["model"]["num_classes"], 4);

    // Invalid (groups do not divide the channels) and malformed files: one clear line each.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("\"groups\":4", "\"groups\":3"),
    )
    .unwrap();
    let err = one_line_error(&ddpm(&[
        "init",
        "--preset",
        cfg.to_str().unwrap(),
        "--out",
        w.to_str().unwrap(),
    ]));
    assert!(err.contains("groups"), "{err}");
    std::fs::write(&cfg, "{\"base_channels\": 8").unwrap();
    let err = one_line_error(&ddpm(&[
        "init",
        "--preset",
        cfg.to_str().unwrap(),
        "--out",
        w.to_str().unwrap(),
    ]));
    assert!(err.contains("not a U-Net config"), "{err}");
}

#[cfg(feature = "train")]
#[test]
fn eval_reports_each_class_under_guidance_and_writes_a_grid() {
    let dir = common::tempdir();
    let w = dir.path().join("m.safetensors");
    let clf = dir.path().join("clf.safetensors");
    let grid = dir.path().join("grid.png");
    init_synthetic("tiny", &w);
    let cfg = dir.path().join("model.json");
    std::fs::write(&cfg, SMALL_CONFIG).unwrap();
    init_synthetic(cfg.to_str().unwrap(), &w);
    train_synthetic_classifier(20, &clf);
    let out = ddpm(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--classifier",
        clf.to_str().unwrap(),
        "--no-elbo",
        "--samples",
        "10",
        "--sampler",
        "ddim",
        "--steps",
        "2",
        "--class",
        "all",
        "--guidance",
        "2",
        "--grid",
        grid.to_str().unwrap(),
        "-q",
    ]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 10 tiles of 28×28 in 3 rows × 4 columns with 2-pixel padding.
    assert_eq!(png_size(&grid), (4 * 28 + 5 * 2, 3 * 28 + 4 * 2));
    let q = &json["quality"];
    assert_eq!(q["samples"], 10);
    let per = q["labelled_as_class_per_class"].as_array().unwrap();
    assert_eq!(per.len(), 4);
    let overall = q["labelled_as_class"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overall));
    // 10 samples over 4 classes: 3, 3, 2, 2 — the overall fraction weights classes so.
    let weighted = per
        .iter()
        .zip([3.0, 3.0, 2.0, 2.0])
        .map(|(v, n)| v.as_f64().unwrap() * n)
        .sum::<f64>()
        / 10.0;
    assert!((weighted - overall).abs() < 1e-9, "{weighted} vs {overall}");
    let real = q["confident_fraction_real_test"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&real));

    // A long evaluation in pieces: two seeds saved apart, then scored together.
    let piece_with_steps = |weights: &Path, steps: &str, seed: &str, out: &Path| {
        ok(&ddpm(&[
            "eval",
            "--weights",
            weights.to_str().unwrap(),
            "--classifier",
            clf.to_str().unwrap(),
            "--no-elbo",
            "--samples",
            "4",
            "--sampler",
            "ddim",
            "--steps",
            steps,
            "--seed",
            seed,
            "--save-samples",
            out.to_str().unwrap(),
            "-q",
        ]))
    };
    let piece = |weights: &Path, seed: &str, out: &Path| piece_with_steps(weights, "2", seed, out);
    let score = |a: &Path, b: &Path| {
        ddpm(&[
            "eval",
            "--weights",
            w.to_str().unwrap(),
            "--classifier",
            clf.to_str().unwrap(),
            "--no-elbo",
            "--load-samples",
            a.to_str().unwrap(),
            "--load-samples",
            b.to_str().unwrap(),
            "-q",
        ])
    };
    let (p1, p2) = (dir.path().join("p1.st"), dir.path().join("p2.st"));
    for (seed, piece_path) in [("1", &p1), ("2", &p2)] {
        piece(&w, seed, piece_path);
    }
    let out = score(&p1, &p2);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["quality"]["samples"], 8);
    assert_eq!(json["quality"]["steps"], 2);
    assert_eq!(json["quality"]["real_images"], 8);
    // Pieces drawn from a copy of the weights at another path (another machine) go together;
    // pieces from other weights at the same path do not.
    let copy = dir.path().join("copy.safetensors");
    std::fs::copy(&w, &copy).unwrap();
    let p3 = dir.path().join("p3.st");
    piece(&copy, "3", &p3);
    let out = score(&p1, &p3);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["quality"]["samples"], 8);
    let other = dir.path().join("other.safetensors");
    ok(&ddpm(&[
        "init",
        "--preset",
        cfg.to_str().unwrap(),
        "--seed",
        "7",
        "--out",
        other.to_str().unwrap(),
    ]));
    std::fs::copy(&other, &copy).unwrap();
    piece(&copy, "3", &p3);
    let err = one_line_error(&score(&p1, &p3));
    assert!(err.contains("made differently"), "{err}");
    // Pieces made differently do not mix; a file of another kind is named in the error.
    piece_with_steps(&w, "3", "1000", &p2);
    let err = one_line_error(&score(&p1, &p2));
    assert!(err.contains("made differently"), "{err}");
    let err = one_line_error(&ddpm(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--classifier",
        clf.to_str().unwrap(),
        "--no-elbo",
        "--load-samples",
        w.to_str().unwrap(),
    ]));
    assert!(err.contains("not a sample set"), "{err}");

    // A model without labels cannot be sampled per class.
    init_synthetic("tiny", &w);
    let err = one_line_error(&ddpm(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--classifier",
        clf.to_str().unwrap(),
        "--no-elbo",
        "--samples",
        "8",
        "--class",
        "all",
    ]));
    assert!(err.contains("labels"), "{err}");
}

/// `ddpm --version` names the features the binary was built with (scripts/gpu-session.sh
/// checks it before carrying a binary to a GPU machine), and without `gpu` a GPU request runs
/// on the CPU and says why.
#[test]
fn version_names_the_features_and_gpu_without_the_feature_falls_back() {
    let out = ddpm(&["--version"]);
    ok(&out);
    let version = String::from_utf8_lossy(&out.stdout);
    let gpu = if cfg!(feature = "gpu") {
        "gpu"
    } else {
        "no gpu"
    };
    let train = if cfg!(feature = "train") {
        "train"
    } else {
        "no train"
    };
    assert!(version.contains(&format!("({gpu}, {train})")), "{version}");
    if !cfg!(feature = "gpu") {
        let out = ddpm(&[
            "bench", "--preset", "tiny", "--device", "gpu", "--count", "1",
        ]);
        ok(&out);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("without the `gpu` feature"), "{said}");
    }
}

/// `eval --variance` picks σ_t² for the samples it draws, not only for the bound: the same seed
/// gives other images, and the saved set says which variance made it (so sets drawn with
/// different variances are not scored together).
#[cfg(feature = "train")]
#[test]
fn eval_samples_with_the_variance_it_is_given() {
    use ddpm_web::train::sample_set;
    let dir = common::tempdir();
    let w = dir.path().join("m.safetensors");
    let clf = dir.path().join("clf.safetensors");
    init_synthetic("tiny", &w);
    train_synthetic_classifier(2, &clf);
    let draw = |variance: &str| {
        let path = dir.path().join(format!("{variance}.st"));
        ok(&ddpm(&[
            "eval",
            "--weights",
            w.to_str().unwrap(),
            "--classifier",
            clf.to_str().unwrap(),
            "--no-elbo",
            "--samples",
            "2",
            "--sampler",
            "ddpm",
            "--steps",
            "3",
            "--variance",
            variance,
            "--save-samples",
            path.to_str().unwrap(),
            "-q",
        ]));
        sample_set::load(&path).unwrap()
    };
    let (small, large) = (draw("fixed-small"), draw("fixed-large"));
    assert_eq!(small.settings["variance"], "FixedSmall");
    assert_eq!(large.settings["variance"], "FixedLarge");
    assert_eq!(small.images.len(), large.images.len());
    let differ = small
        .images
        .iter()
        .zip(&large.images)
        .any(|(a, b)| (a - b).abs() > 1e-4);
    assert!(differ, "fixed-small and fixed-large drew the same images");
}

/// The f32 tensors of a weights file written with `--f32`, by name, read with the safetensors
/// crate directly (not through the code under test).
#[cfg(feature = "train")]
fn raw_f32_tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect()
}

#[test]
#[cfg(feature = "train")]
fn average_takes_the_mean_of_each_parameter_and_refuses_other_models() {
    let dir = common::tempdir();
    let path = |name: &str| dir.path().join(name);
    let s = |name: &str| path(name).to_str().unwrap().to_string();
    for (seed, name) in [("1", "a.st"), ("2", "b.st"), ("3", "c.st")] {
        ok(&ddpm(&[
            "init",
            "--preset",
            "tiny",
            "--seed",
            seed,
            "--f32",
            "--out",
            &s(name),
        ]));
    }
    ok(&ddpm(&[
        "average",
        "--weights",
        &s("a.st"),
        &s("b.st"),
        &s("c.st"),
        "--f32",
        "--out",
        &s("mean.st"),
    ]));
    let (a, b, c) = (
        raw_f32_tensors(&path("a.st")),
        raw_f32_tensors(&path("b.st")),
        raw_f32_tensors(&path("c.st")),
    );
    let mean = raw_f32_tensors(&path("mean.st"));
    assert_eq!(mean.len(), a.len());
    let mut differs_from_inputs = false;
    for (name, m) in &mean {
        for (i, v) in m.iter().enumerate() {
            let want = (a[name][i] + b[name][i] + c[name][i]) / 3.0;
            assert!((v - want).abs() <= 1e-6 * (1.0 + want.abs()), "{name}[{i}]");
            differs_from_inputs |= (v - a[name][i]).abs() > 1e-4;
        }
    }
    assert!(differs_from_inputs, "the mean equals the first input");
    let info = ddpm(&["info", &s("mean.st")]);
    ok(&info);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("mean of the weights of 3 exports"),
        "the manifest says what was averaged"
    );
    // The mean is a model the sampler loads.
    ok(&ddpm(&[
        "sample",
        "--weights",
        &s("mean.st"),
        "--count",
        "1",
        "--steps",
        "2",
        "--out",
        &s("mean.png"),
    ]));

    // Another model, one file, a corrupt file: one-line errors, nothing written.
    ok(&ddpm(&[
        "init",
        "--preset",
        "tiny-classes",
        "--out",
        &s("other.st"),
    ]));
    std::fs::write(path("cut.st"), &std::fs::read(path("a.st")).unwrap()[..100]).unwrap();
    let cases: [(&[String], &str); 3] = [
        (&[s("a.st"), s("other.st")], "not the same model"),
        (&[s("a.st")], "at least two"),
        (&[s("a.st"), s("cut.st")], "cut.st"),
    ];
    for (inputs, words) in cases {
        let mut args = vec!["average".to_string(), "--weights".into()];
        args.extend(inputs.iter().cloned());
        args.extend(["--out".into(), s("bad.st")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = one_line_error(&ddpm(&args));
        assert!(err.contains(words), "{inputs:?}: {err}");
        assert!(!path("bad.st").exists(), "nothing is written on error");
    }
}
