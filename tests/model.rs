//! U-Net shapes, parameter count, time embedding and config validation.

mod common;

use common::*;
use ddpm_web::UNetConfig;
use ddpm_web::burn::module::Module;
use ddpm_web::burn::tensor::{Int, Tensor, TensorData};
use ddpm_web::model::{frequencies, timestep_embedding, upsample_nearest2x};

fn forward_shape(config: &UNetConfig, batch: usize, labels: bool) -> [usize; 4] {
    let device = cpu();
    let unet = config.init(&device).unwrap();
    let c = config.image_channels;
    let s = config.image_size;
    let x = Tensor::<4>::zeros([batch, c, s, s], &device);
    let t = Tensor::<1>::from_data(
        TensorData::new(vec![1.0f32, 500.0, 1000.0][..batch].to_vec(), [batch]),
        &device,
    );
    let y = labels.then(|| {
        Tensor::<1, Int>::from_data(
            TensorData::new(vec![0i64, 3, 9][..batch].to_vec(), [batch]),
            &device,
        )
    });
    let out = unet.forward(x, t, y);
    let v = to_vec(out.clone());
    assert!(v.iter().all(|x| x.is_finite()));
    out.dims()
}

#[test]
fn output_shape_equals_input_shape_28_and_32() {
    // 28×28 grey, three levels (28 → 14 → 7), attention at 7.
    let mnist = UNetConfig::new().with_base_channels(16).with_groups(4);
    assert_eq!(forward_shape(&mnist, 2, false), [2, 1, 28, 28]);
    // 32×32 RGB, four levels (32 → 16 → 8 → 4), attention at 16 and 8.
    let rgb = UNetConfig::new()
        .with_image_channels(3)
        .with_image_size(32)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2, 2, 2])
        .with_res_blocks(1)
        .with_attention_resolutions(vec![16, 8])
        .with_groups(4);
    assert_eq!(forward_shape(&rgb, 3, false), [3, 3, 32, 32]);
    // Class-conditional with labels, and without (uses the "no label" row).
    let cond = UNetConfig::preset("tiny-classes").unwrap();
    assert_eq!(forward_shape(&cond, 3, true), [3, 1, 28, 28]);
    assert_eq!(forward_shape(&cond, 2, false), [2, 1, 28, 28]);
}

#[test]
fn parameter_count_matches_hand_count() {
    // base 8, one level, one res block, no attention: counted by hand layer by layer
    // (time MLP 288 + 1056, conv_in 80, encoder res block 1464, middle 1464 + 304 + 1464,
    // two decoder res blocks with 16→8 shortcut 2192 each, norm_out 16, conv_out 73).
    let config = UNetConfig::new()
        .with_image_size(8)
        .with_base_channels(8)
        .with_channel_mults(vec![1])
        .with_res_blocks(1)
        .with_attention_resolutions(vec![])
        .with_groups(4);
    let unet = config.init(&cpu()).unwrap();
    assert_eq!(unet.num_params(), 10_593);
    // Ten classes add an 11-row embedding of width 4 × base.
    let unet = config.with_num_classes(10).init(&cpu()).unwrap();
    assert_eq!(unet.num_params(), 10_593 + 11 * 32);
}

#[test]
fn shipped_presets_fit_the_browser_budget() {
    // The shipped models must stay under 8 MB on disk (f16: 2 bytes per parameter) and big
    // enough to learn their dataset.
    for name in ["mnist", "fashion", "emoji"] {
        let unet = UNetConfig::preset(name).unwrap().init(&cpu()).unwrap();
        let n = unet.num_params();
        println!("{name} preset: {n} parameters");
        assert!(n > 500_000 && 2 * n < 8_000_000, "{name}: {n}");
    }
}

#[test]
fn time_embedding_is_sinusoidal() {
    let freqs = frequencies(8);
    let expect = [
        1.0,
        10000f64.powf(-1.0 / 3.0),
        10000f64.powf(-2.0 / 3.0),
        1e-4,
    ];
    for (f, e) in freqs.iter().zip(expect) {
        assert!((*f as f64 - e).abs() < 1e-7 * e.max(1e-3), "{f} vs {e}");
    }
    let device = cpu();
    let t = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 5.0, 1000.0], [3]), &device);
    let emb = timestep_embedding(t, 8, &device);
    assert_eq!(emb.dims(), [3, 8]);
    let v = emb.into_data().try_into_vec_as::<f32>().unwrap();
    // t = 0: sin = 0, cos = 1.
    assert_eq!(&v[0..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    for (k, e) in expect.iter().enumerate() {
        assert!((v[8 + k] as f64 - (5.0 * e).sin()).abs() < 1e-5);
        assert!((v[12 + k] as f64 - (5.0 * e).cos()).abs() < 1e-5);
        assert!((v[16 + k] as f64 - (1000.0 * e).sin()).abs() < 1e-3);
    }
}

#[test]
fn nearest_upsampling_repeats_pixels() {
    let device = cpu();
    let x = tensor4(vec![1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2], &device);
    let v = to_vec(upsample_nearest2x(x));
    assert_eq!(
        v,
        vec![
            1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.
        ]
    );
}

#[test]
fn bad_configs_are_errors_not_panics() {
    let device = cpu();
    let bad = [
        UNetConfig::new().with_groups(5),      // 32 channels in 5 groups
        UNetConfig::new().with_image_size(30), // not divisible by 4
        UNetConfig::new().with_channel_mults(vec![]), // no levels
        UNetConfig::new().with_dropout(1.0),   // not in [0, 1)
        UNetConfig::new().with_base_channels(0),
        UNetConfig::new().with_image_channels(0),
        UNetConfig::new().with_res_blocks(0),
    ];
    for cfg in bad {
        let err = cfg.init(&device).expect_err("config must be rejected");
        assert!(err.to_string().starts_with("invalid U-Net config"), "{err}");
    }
}

#[test]
fn every_preset_validates() {
    for name in UNetConfig::PRESETS {
        UNetConfig::preset(name).unwrap().validate().unwrap();
    }
    assert!(UNetConfig::preset("nope").is_none());
}
