//! Schedule tables against closed forms and independently computed values.

use ddpm_web::schedule::{Schedule, ScheduleConfig, ScheduleKind, normal_kl, timestep_subsequence};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// β_t of the paper's linear schedule, written out independently.
fn paper_beta(t: usize) -> f64 {
    1e-4 + (0.02 - 1e-4) * (t as f64 - 1.0) / 999.0
}

#[test]
fn linear_alpha_bar_t_matches_paper_value() {
    let s = Schedule::linear_paper();
    // 4.0358e-5 to 4 significant digits (the reference value).
    let ab = s.alpha_bar(1000);
    assert!((ab - 4.0358e-5).abs() < 5e-10, "ᾱ_1000 = {ab:e}");
    assert_eq!(format!("{:.4e}", ab), "4.0358e-5");
    // Independent: exp(Σ ln(1 − β_t)).
    let log_sum: f64 = (1..=1000).map(|t| (1.0 - paper_beta(t)).ln()).sum();
    assert!(rel(ab, log_sum.exp()) < 1e-10);
}

#[test]
fn linear_betas_are_evenly_spaced_endpoints() {
    let s = Schedule::linear_paper();
    assert_eq!(s.timesteps(), 1000);
    assert!(rel(s.beta(1), 1e-4) < 1e-12);
    assert!(rel(s.beta(1000), 0.02) < 1e-12);
    for t in [1, 2, 17, 500, 999, 1000] {
        assert!(rel(s.beta(t), paper_beta(t)) < 1e-12, "t = {t}");
        assert!(rel(s.alpha(t), 1.0 - paper_beta(t)) < 1e-12);
    }
    assert!(rel(s.alpha_bar(1), 0.9999) < 1e-14);
    assert!(rel(s.alpha_bar(2), 0.9999 * (1.0 - paper_beta(2))) < 1e-14);
    assert_eq!(s.alpha_bar_prev(1), 1.0);
    assert_eq!(s.alpha_bar(0), 1.0);
}

#[test]
fn posterior_variance_closed_forms() {
    let s = Schedule::linear_paper();
    assert_eq!(s.posterior_variance(1), 0.0, "β̃_1 = 0 since ᾱ_0 = 1");
    for t in 2..=1000 {
        // Independent: the product of Gaussians gives 1/β̃ = α_t/β_t + 1/(1 − ᾱ_{t−1}).
        let ab_prev: f64 = (1..t).map(|s| 1.0 - paper_beta(s)).product();
        let inv = (1.0 - paper_beta(t)) / paper_beta(t) + 1.0 / (1.0 - ab_prev);
        assert!(rel(s.posterior_variance(t), 1.0 / inv) < 1e-9, "t = {t}");
        assert!(s.posterior_variance(t) <= s.beta(t));
    }
    assert!(
        rel(
            s.posterior_log_variance_clipped(1),
            s.posterior_variance(2).ln()
        ) < 1e-12
    );
    assert!(
        rel(
            s.posterior_log_variance_clipped(10),
            s.posterior_variance(10).ln()
        ) < 1e-12
    );
}

#[test]
fn posterior_mean_equals_algorithm_2_mean() {
    // μ̃_t(x_t, x̂₀(x_t, ε)) = (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε): an algebraic identity that ties
    // the posterior coefficients to Eq. 11.
    let s = Schedule::linear_paper();
    for &(t, xt, eps) in &[
        (2usize, 0.3f64, -1.2f64),
        (10, -0.7, 0.4),
        (500, 1.5, 0.9),
        (1000, -0.2, 2.0),
    ] {
        let x0 = (xt - s.sqrt_one_minus_alpha_bar(t) * eps) / s.sqrt_alpha_bar(t);
        let mu_tilde = s.posterior_mean_coef_x0(t) * x0 + s.posterior_mean_coef_xt(t) * xt;
        let ab: f64 = (1..=t).map(|k| 1.0 - paper_beta(k)).product();
        let mu_eps = (xt - paper_beta(t) / (1.0 - ab).sqrt() * eps) / (1.0 - paper_beta(t)).sqrt();
        assert!(
            (mu_tilde - mu_eps).abs() < 1e-9,
            "t = {t}: {mu_tilde} vs {mu_eps}"
        );
    }
}

#[test]
fn prior_term_l_t_is_about_1e_minus_5_bits_per_dim() {
    let s = Schedule::linear_paper();
    // Average over pixel values spread uniformly in [−1, 1] (256 levels).
    let n = 256;
    let nats: f64 = (0..n)
        .map(|i| s.prior_kl(-1.0 + 2.0 * i as f64 / (n - 1) as f64))
        .sum::<f64>()
        / n as f64;
    let bits = nats / std::f64::consts::LN_2;
    assert!(bits > 1e-6 && bits < 3e-5, "L_T = {bits:e} bits/dim");
    // Closed form for small ᾱ_T: KL ≈ ½ ᾱ_T x² (nats).
    let x = 0.8;
    assert!(rel(s.prior_kl(x), 0.5 * s.alpha_bar(1000) * x * x) < 1e-3);
}

#[test]
fn normal_kl_known_values() {
    assert!(normal_kl(0.3, 0.1, 0.3, 0.1).abs() < 1e-15);
    assert!((normal_kl(1.0, 0.0, 0.0, 0.0) - 0.5).abs() < 1e-15);
    // KL(N(0, 4) ‖ N(0, 1)) = ½ (4 − 1 − ln 4)
    let expected = 0.5 * (4.0 - 1.0 - 4f64.ln());
    assert!((normal_kl(0.0, 4f64.ln(), 0.0, 0.0) - expected).abs() < 1e-12);
}

#[test]
fn cosine_schedule_follows_its_closed_form() {
    let cfg = ScheduleConfig::new().with_kind(ScheduleKind::Cosine);
    let s = Schedule::new(&cfg).unwrap();
    let f = |t: f64| {
        ((t / 1000.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    for t in [1usize, 10, 250, 500, 900, 999] {
        assert!(rel(s.alpha_bar(t), f(t as f64) / f(0.0)) < 1e-9, "t = {t}");
    }
    // f(T) = 0 would give β_T = 1: it is clipped to 0.999.
    assert!((s.beta(1000) - 0.999).abs() < 1e-15);
    assert!((1..=1000).all(|t| s.beta(t) > 0.0 && s.beta(t) <= 0.999));
    // ᾱ is strictly decreasing.
    assert!((1..=1000).all(|t| s.alpha_bar(t) < s.alpha_bar(t - 1)));
}

#[test]
fn invalid_schedules_are_errors() {
    assert!(Schedule::new(&ScheduleConfig::new().with_timesteps(0)).is_err());
    assert!(
        Schedule::new(
            &ScheduleConfig::new()
                .with_beta_start(0.5)
                .with_beta_end(0.1)
        )
        .is_err()
    );
    assert!(Schedule::new(&ScheduleConfig::new().with_beta_end(1.0)).is_err());
    assert!(
        Schedule::new(
            &ScheduleConfig::new()
                .with_kind(ScheduleKind::Cosine)
                .with_max_beta(1.5)
        )
        .is_err()
    );
}

#[test]
fn ddim_subsequence_is_even_and_ends_at_t() {
    assert_eq!(
        timestep_subsequence(1000, 1000),
        (1..=1000).collect::<Vec<_>>()
    );
    assert_eq!(timestep_subsequence(1000, 4), vec![250, 500, 750, 1000]);
    assert_eq!(timestep_subsequence(1000, 3), vec![333, 667, 1000]);
    let seq = timestep_subsequence(1000, 50);
    assert_eq!(seq.len(), 50);
    assert_eq!(seq[0], 20);
    assert!(seq.windows(2).all(|w| w[1] - w[0] == 20));
    for steps in 1..=100 {
        let seq = timestep_subsequence(100, steps);
        assert_eq!(seq.len(), steps);
        assert_eq!(*seq.last().unwrap(), 100);
        assert!(seq.windows(2).all(|w| w[0] < w[1]) && seq[0] >= 1);
    }
}
