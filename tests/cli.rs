//! The `ddpm` command end to end: init → info → sample (PNG, per-sample PNGs, GIF) and errors.
#![cfg(not(target_arch = "wasm32"))]

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

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn init_info_sample_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
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
    let out = ddpm(&[
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
        "--out",
        grid.to_str().unwrap(),
        "--gif",
        gif.to_str().unwrap(),
        "--each",
        each.to_str().unwrap(),
        "--quiet",
    ]);
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
    ok(&ddpm(&[
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
        "--out",
        grid2.to_str().unwrap(),
        "-q",
    ]));
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
    let dir = tempfile::tempdir().unwrap();
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

    let err = one_line_error(&ddpm(&[
        "sample",
        "--weights",
        "/no/such/file",
        "--out",
        out_s,
    ]));
    assert!(err.contains("/no/such/file"), "{err}");

    let err = one_line_error(&ddpm(&[
        "sample",
        "--weights",
        ws,
        "--class",
        "3",
        "--out",
        out_s,
    ]));
    assert!(
        err.contains("without labels") || err.contains("no classes"),
        "{err}"
    );
    let err = one_line_error(&ddpm(&[
        "sample",
        "--weights",
        ws,
        "--steps",
        "5000",
        "--out",
        out_s,
    ]));
    assert!(err.contains("steps"), "{err}");
    let err = one_line_error(&ddpm(&[
        "sample",
        "--weights",
        ws,
        "--device",
        "tpu",
        "--out",
        out_s,
    ]));
    assert!(err.contains("tpu"), "{err}");
    assert!(!out_png.exists(), "nothing is written on error");
}
