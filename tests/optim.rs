//! The flat optimizer: Adam with global-norm clipping and the EMA on all parameters at once,
//! checked against a plain f64 calculation on the host, and the layout / state round trips.
#![cfg(feature = "train")]

use ddpm_web::UNetConfig;
use ddpm_web::burn::optim::GradientsParams;
use ddpm_web::burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_web::train::optim::{
    AdamState, AdamStep, ParamLayout, adam_step, clip_scale, ema_step, flatten, flatten_grads,
    mse_loss, unflatten,
};
use ddpm_web::weights::parameter_values;

fn host(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("f32")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn flat_adam_with_clipping_and_ema_match_a_host_calculation() {
    let cpu = Device::flex();
    let ad = cpu.clone().autodiff();
    cpu.seed(11);
    let mut model = UNetConfig::preset("tiny-classes")
        .unwrap()
        .init(&ad)
        .unwrap();
    let layout = ParamLayout::of(&model);
    assert!(layout.slots.len() > 20);
    let n = layout.total;
    let (b1, b2, eps, max_norm) = (0.9, 0.999, 1e-8, 0.05);
    let mut w = flatten(&model);
    let mut ema = w.clone();
    let mut adam = AdamState::default();
    // The same calculation in f64 on the host.
    let mut w_h = host(w.clone());
    let mut ema_h = w_h.clone();
    let (mut m_h, mut v_h) = (vec![0.0; n], vec![0.0; n]);
    let mut clipped = 0;
    for step in 1..=3i32 {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 784)
                    .map(|i| ((i * 37 + step * 11) % 200) as f32 / 100.0 - 1.0)
                    .collect::<Vec<_>>(),
                [2, 1, 28, 28],
            ),
            &ad,
        );
        let target = x.clone().mul_scalar(0.5);
        let t = Tensor::<1>::from_data(TensorData::new(vec![10.0f32, 500.0], [2]), &ad);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 10], [2]), &ad);
        let pred = model.forward(x, t, Some(y));
        let loss = mse_loss(&pred, &target);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let g = flatten_grads(&model, &grads);
        let g_h = host(g.clone());
        let lr = 1e-3 * step as f64;
        let hp = AdamStep {
            lr,
            grad_scale: 1.0,
            beta1: b1,
            beta2: b2,
            eps,
        };
        let scale = clip_scale(&g, max_norm);
        w = adam_step(w, g, &mut adam, hp, scale);
        model = unflatten(model, &w);
        ema = ema_step(ema, &w, 0.9);

        let norm = g_h.iter().map(|x| x * x).sum::<f64>().sqrt();
        let s = (max_norm / (norm + 1e-6)).min(1.0);
        clipped += usize::from(s < 1.0);
        for i in 0..n {
            let gi = g_h[i] * s;
            m_h[i] = b1 * m_h[i] + (1.0 - b1) * gi;
            v_h[i] = b2 * v_h[i] + (1.0 - b2) * gi * gi;
            let m_hat = m_h[i] / (1.0 - b1.powi(step));
            let v_hat = v_h[i] / (1.0 - b2.powi(step));
            w_h[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            ema_h[i] = 0.9 * ema_h[i] + 0.1 * w_h[i];
        }
        let d = max_diff(&host(w.clone()), &w_h);
        assert!(d < 1e-5, "weights differ by {d} after step {step}");
        let d = max_diff(&host(ema.clone()), &ema_h);
        assert!(d < 1e-5, "EMA differs by {d} after step {step}");
    }
    assert!(clipped > 0, "clipping was never in play");
    // The model's own parameters are the flat vector's pieces…
    assert!(max_diff(&host(flatten(&model)), &w_h) < 1e-5);
    // …and still get gradients, every one of them.
    let x = Tensor::<4>::ones([1, 1, 28, 28], &ad);
    let t = Tensor::<1>::from_data(TensorData::new(vec![3.0f32], [1]), &ad);
    let loss = model.forward(x, t, None).square().mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    assert_eq!(grads.len(), layout.slots.len());
    assert_eq!(adam.t, 3);
}

#[test]
fn layout_and_optimizer_state_round_trip_and_refuse_another_model() {
    let cpu = Device::flex();
    cpu.seed(5);
    let model = UNetConfig::preset("tiny").unwrap().init(&cpu).unwrap();
    let layout = ParamLayout::of(&model);
    // unflatten ∘ flatten is the identity, and visits parameters as parameter_values does.
    let before = parameter_values(&model);
    let names: Vec<&str> = layout.slots.iter().map(|s| s.path.as_str()).collect();
    let expected: Vec<&str> = before.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, expected);
    let flat = flatten(&model);
    assert_eq!(flat.dims(), [layout.total]);
    let after = parameter_values(&unflatten(model, &flat.clone().mul_scalar(2.0)));
    for ((name, shape, a), (_, shape2, b)) in before.iter().zip(&after) {
        assert_eq!(shape, shape2);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(2.0 * x, *y, "{name}");
        }
    }

    let mut state = AdamState::default();
    let w = adam_step(
        flat.clone(),
        flat.clone().mul_scalar(0.1),
        &mut state,
        AdamStep {
            lr: 1e-3,
            grad_scale: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        None,
    );
    assert_eq!(w.dims(), [layout.total]);
    let named = state.to_named(&layout).unwrap();
    assert_eq!(named.len(), 2 * layout.slots.len());
    let plain: Vec<(String, Vec<f32>)> = named.into_iter().map(|(n, _, v)| (n, v)).collect();
    let back = AdamState::from_named(plain.clone(), 1, &layout, &cpu).unwrap();
    assert_eq!(
        host(back.m.clone().unwrap()),
        host(state.m.clone().unwrap())
    );
    assert_eq!(host(back.v.unwrap()), host(state.v.unwrap()));
    // Before the first update there is nothing to save, and nothing is an empty state.
    let empty = AdamState::default().to_named(&layout).unwrap();
    assert!(empty.is_empty());
    assert!(
        AdamState::from_named(Vec::new(), 0, &layout, &cpu)
            .unwrap()
            .m
            .is_none()
    );
    // Another model's state is refused with the parameter's name.
    let other = ParamLayout::of(
        &UNetConfig::preset("tiny-classes")
            .unwrap()
            .init(&cpu)
            .unwrap(),
    );
    let Err(err) = AdamState::from_named(plain, 1, &other, &cpu) else {
        panic!("another model's optimizer state was accepted");
    };
    assert!(err.contains("another model"), "{err}");
}
