//! The weights file: round trips and clear errors for every kind of bad file.

mod common;

use common::*;
use ddpm_web::weights::{
    StorageDtype, WeightsError, encode, inspect, load_from_bytes, parameter_values, save_to_bytes,
};
use ddpm_web::{ModelManifest, UNetConfig};
use std::collections::HashMap;

fn tiny() -> (ddpm_web::UNet, ModelManifest) {
    let device = cpu();
    device.seed(4);
    let config = UNetConfig::preset("tiny-classes").unwrap();
    let manifest =
        tiny_manifest(config.clone()).with_class_names((0..10).map(|i| format!("c{i}")).collect());
    (config.init(&device).unwrap(), manifest)
}

#[test]
fn f32_round_trip_is_exact() {
    let (unet, manifest) = tiny();
    let bytes = save_to_bytes(&unet, &manifest, StorageDtype::F32).unwrap();
    let loaded = load_from_bytes(&bytes, &cpu()).unwrap();
    assert_eq!(loaded.manifest, manifest);
    let a = parameter_values(&unet);
    let b = parameter_values(&loaded.unet);
    assert_eq!(a.len(), b.len());
    for ((na, sa, va), (nb, sb, vb)) in a.iter().zip(&b) {
        assert_eq!((na, sa), (nb, sb));
        assert_eq!(va, vb, "{na}");
    }
    assert_eq!(loaded.image_shape(), [1, 28, 28]);
}

#[test]
fn f16_round_trip_is_close_and_half_the_size() {
    let (unet, manifest) = tiny();
    let b32 = save_to_bytes(&unet, &manifest, StorageDtype::F32).unwrap();
    let b16 = save_to_bytes(&unet, &manifest, StorageDtype::F16).unwrap();
    assert!(
        b16.len() < b32.len() * 6 / 10,
        "{} vs {}",
        b16.len(),
        b32.len()
    );
    let loaded = load_from_bytes(&b16, &cpu()).unwrap();
    for ((name, _, va), (_, _, vb)) in parameter_values(&unet)
        .iter()
        .zip(&parameter_values(&loaded.unet))
    {
        for (x, y) in va.iter().zip(vb) {
            assert!(
                (x - y).abs() <= 1e-3 * x.abs().max(1e-2),
                "{name}: {x} vs {y}"
            );
        }
    }
    let summary = inspect(&b16).unwrap();
    assert!(summary.tensors.iter().all(|t| t.dtype == "F16"));
    assert_eq!(summary.parameters, {
        use ddpm_web::burn::module::Module;
        unet.num_params()
    });
}

#[test]
fn the_file_is_plain_safetensors() {
    let (unet, manifest) = tiny();
    let bytes = save_to_bytes(&unet, &manifest, StorageDtype::F16).unwrap();
    // Header: u64 little-endian length, then JSON with our metadata.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "ddpm-web");
    let manifest_json: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest_json["model"]["num_classes"], 10);
    assert_eq!(
        header["conv_in.weight"]["shape"],
        serde_json::json!([8, 1, 3, 3])
    );
}

fn err_of(bytes: &[u8]) -> WeightsError {
    load_from_bytes(bytes, &cpu()).expect_err("loading must fail")
}

#[test]
fn truncated_and_garbage_files_are_corrupt() {
    let (unet, manifest) = tiny();
    let bytes = save_to_bytes(&unet, &manifest, StorageDtype::F16).unwrap();
    for cut in [0, 5, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = err_of(&bytes[..cut]);
        assert!(matches!(e, WeightsError::Corrupt(_)), "cut {cut}: {e}");
        assert!(e.to_string().contains("truncated or corrupt"));
    }
    let e = err_of(b"\x89PNG\r\n\x1a\n not weights at all");
    assert!(matches!(e, WeightsError::Corrupt(_)), "{e}");
    let mut flipped = bytes.clone();
    flipped[10] ^= 0xff; // inside the JSON header
    assert!(matches!(err_of(&flipped), WeightsError::Corrupt(_)));
}

#[test]
fn other_safetensors_files_are_the_wrong_kind() {
    use safetensors::tensor::{Dtype, TensorView};
    let data = vec![0u8; 16];
    let view = TensorView::new(Dtype::F32, vec![4], &data).unwrap();
    let plain = safetensors::serialize(vec![("w", view.clone())], None).unwrap();
    let e = err_of(&plain);
    assert!(matches!(e, WeightsError::WrongKind(_)), "{e}");
    assert!(e.to_string().starts_with("not a ddpm-web weights file"));

    let other = safetensors::serialize(
        vec![("w", view)],
        Some(
            [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect(),
        ),
    )
    .unwrap();
    assert!(err_of(&other).to_string().contains("\"pt\""));
}

fn with_metadata(bytes: &[u8], edit: impl Fn(&mut HashMap<String, String>)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta: HashMap<String, String> = meta.metadata().clone().unwrap().into_iter().collect();
    edit(&mut meta);
    safetensors::serialize(st.tensors(), Some(meta.into_iter().collect())).unwrap()
}

#[test]
fn version_and_manifest_problems_are_named() {
    let (unet, manifest) = tiny();
    let bytes = save_to_bytes(&unet, &manifest, StorageDtype::F16).unwrap();
    let v2 = with_metadata(&bytes, |m| {
        m.insert("format_version".into(), "2".into());
    });
    assert!(matches!(err_of(&v2), WeightsError::Version { .. }));

    let no_manifest = with_metadata(&bytes, |m| {
        m.remove("manifest");
    });
    assert!(matches!(err_of(&no_manifest), WeightsError::Manifest(_)));

    let bad_json = with_metadata(&bytes, |m| {
        m.insert("manifest".into(), "{\"model\": 3".into());
    });
    assert!(matches!(err_of(&bad_json), WeightsError::Manifest(_)));

    // A manifest describing an impossible model: an error, not a GroupNorm panic.
    let mut impossible = manifest.clone();
    impossible.model.groups = 3;
    let bad_cfg = with_metadata(&bytes, |m| {
        m.insert(
            "manifest".into(),
            serde_json::to_string(&impossible).unwrap(),
        );
    });
    let e = err_of(&bad_cfg);
    assert!(
        matches!(e, WeightsError::Manifest(_)) && e.to_string().contains("groups"),
        "{e}"
    );
}

#[test]
fn tensors_that_do_not_fit_the_manifest_are_a_mismatch() {
    let (unet, manifest) = tiny();
    let values = parameter_values(&unet);

    // The manifest says 16 base channels; the tensors were made for 8.
    let mut wider = manifest.clone();
    wider.model.base_channels = 16;
    let e = err_of(&encode(&values, &wider, StorageDtype::F32).unwrap());
    assert!(matches!(e, WeightsError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("shape"), "{e}");

    // A missing tensor is named.
    let missing: Vec<_> = values
        .iter()
        .filter(|(n, _, _)| n != "conv_out.bias")
        .cloned()
        .collect();
    let e = err_of(&encode(&missing, &manifest, StorageDtype::F32).unwrap());
    assert!(
        e.to_string().contains("conv_out.bias") && e.to_string().contains("missing"),
        "{e}"
    );

    // An extra tensor is named.
    let mut extra = values.clone();
    extra.push(("head.weight".into(), vec![2], vec![1.0, 2.0]));
    let e = err_of(&encode(&extra, &manifest, StorageDtype::F32).unwrap());
    assert!(e.to_string().contains("head.weight"), "{e}");

    // Non-finite values are refused.
    let mut nan = values.clone();
    nan[0].2[0] = f32::NAN;
    let e = err_of(&encode(&nan, &manifest, StorageDtype::F32).unwrap());
    assert!(e.to_string().contains("non-finite"), "{e}");

    // An unconditional model's weights under a conditional manifest (and vice versa).
    let mut uncond = manifest.clone().with_class_names(vec![]);
    uncond.model.num_classes = 0;
    let e = err_of(&encode(&values, &uncond, StorageDtype::F32).unwrap());
    assert!(e.to_string().contains("class_embed"), "{e}");
}
