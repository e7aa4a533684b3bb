//! Noise schedules and every derived table the samplers and the ELBO need.
//!
//! All tables are computed in f64 on the CPU (SPEC §2) and indexed by the paper's t ∈ {1..T};
//! index 0 holds the conventions ᾱ_0 = 1, β_0 = 0 so that ᾱ_{t−1} needs no special case.

use burn::config::Config;

/// Which β_t schedule to use.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ScheduleKind {
    /// Ho et al. 2020: β_t evenly spaced from `beta_start` to `beta_end`.
    Linear,
    /// Nichol & Dhariwal 2021: ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T)+s)/(1+s)·π/2).
    Cosine,
}

/// The forward-process schedule, stored with the weights (one source of truth).
#[derive(Config, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// β schedule family.
    #[config(default = "ScheduleKind::Linear")]
    pub kind: ScheduleKind,
    /// Number of diffusion steps T.
    #[config(default = 1000)]
    pub timesteps: usize,
    /// β_1 of the linear schedule.
    #[config(default = 1e-4)]
    pub beta_start: f64,
    /// β_T of the linear schedule.
    #[config(default = 0.02)]
    pub beta_end: f64,
    /// Offset s of the cosine schedule.
    #[config(default = 0.008)]
    pub cosine_s: f64,
    /// Upper clip for β_t of the cosine schedule.
    #[config(default = 0.999)]
    pub max_beta: f64,
}

/// Why a schedule configuration cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid schedule: {0}")]
pub struct ScheduleError(pub String);

/// Precomputed schedule tables, index t = 0..=T.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: ScheduleConfig,
    beta: Vec<f64>,
    alpha_bar: Vec<f64>,
}

impl Schedule {
    /// The paper's linear schedule (T = 1000, β from 1e−4 to 0.02).
    pub fn linear_paper() -> Self {
        Self::new(&ScheduleConfig::new()).expect("the paper's schedule is valid")
    }

    /// Build the tables for a configuration, rejecting values that would give NaNs.
    pub fn new(config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        let t_max = config.timesteps;
        if !(1..=100_000).contains(&t_max) {
            return Err(ScheduleError(format!(
                "timesteps must be in 1..=100000, got {t_max}"
            )));
        }
        let mut beta = vec![0.0f64; t_max + 1];
        match config.kind {
            ScheduleKind::Linear => {
                let (b0, b1) = (config.beta_start, config.beta_end);
                if !(b0 > 0.0 && b1 < 1.0 && b0 <= b1) {
                    return Err(ScheduleError(format!(
                        "linear schedule needs 0 < beta_start <= beta_end < 1, got {b0}..{b1}"
                    )));
                }
                for (t, b) in beta.iter_mut().enumerate().skip(1) {
                    // np.linspace(b0, b1, T)[t-1]
                    *b = if t_max == 1 {
                        b0
                    } else {
                        b0 + (b1 - b0) * (t - 1) as f64 / (t_max - 1) as f64
                    };
                }
            }
            ScheduleKind::Cosine => {
                let s = config.cosine_s;
                if !(s >= 0.0 && config.max_beta > 0.0 && config.max_beta < 1.0) {
                    return Err(ScheduleError(format!(
                        "cosine schedule needs s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={}",
                        config.max_beta
                    )));
                }
                let f = |t: f64| {
                    let c =
                        ((t / t_max as f64 + s) / (1.0 + s) * core::f64::consts::FRAC_PI_2).cos();
                    c * c
                };
                for (t, b) in beta.iter_mut().enumerate().skip(1) {
                    let ab = f(t as f64) / f(0.0);
                    let ab_prev = f((t - 1) as f64) / f(0.0);
                    *b = (1.0 - ab / ab_prev).min(config.max_beta);
                }
            }
        }
        let mut alpha_bar = vec![1.0f64; t_max + 1];
        for t in 1..=t_max {
            alpha_bar[t] = alpha_bar[t - 1] * (1.0 - beta[t]);
        }
        Ok(Self {
            config: config.clone(),
            beta,
            alpha_bar,
        })
    }

    /// The configuration these tables were built from.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// T, the number of diffusion steps.
    pub fn timesteps(&self) -> usize {
        self.config.timesteps
    }

    /// β_t (β_0 = 0).
    pub fn beta(&self, t: usize) -> f64 {
        self.beta[t]
    }

    /// α_t = 1 − β_t.
    pub fn alpha(&self, t: usize) -> f64 {
        1.0 - self.beta[t]
    }

    /// ᾱ_t = ∏_{s≤t} α_s (ᾱ_0 = 1).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bar[t]
    }

    /// ᾱ_{t−1}, with ᾱ_0 = 1.
    pub fn alpha_bar_prev(&self, t: usize) -> f64 {
        self.alpha_bar[t.saturating_sub(1)]
    }

    /// √ᾱ_t, the signal scale of q(x_t | x_0).
    pub fn sqrt_alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bar[t].sqrt()
    }

    /// √(1 − ᾱ_t), the noise scale of q(x_t | x_0).
    pub fn sqrt_one_minus_alpha_bar(&self, t: usize) -> f64 {
        (1.0 - self.alpha_bar[t]).sqrt()
    }

    /// β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, the posterior variance (β̃_1 = 0).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        (1.0 - self.alpha_bar_prev(t)) / (1.0 - self.alpha_bar[t]) * self.beta[t]
    }

    /// log β̃_t with β̃_1 replaced by β̃_2 (β̃_1 = 0 has no log), as in the reference code.
    pub fn posterior_log_variance_clipped(&self, t: usize) -> f64 {
        if t <= 1 && self.timesteps() >= 2 {
            self.posterior_variance(2).ln()
        } else {
            self.posterior_variance(t).ln()
        }
    }

    /// Coefficient of x_0 in μ̃_t: √ᾱ_{t−1} β_t / (1 − ᾱ_t).
    pub fn posterior_mean_coef_x0(&self, t: usize) -> f64 {
        self.alpha_bar_prev(t).sqrt() * self.beta[t] / (1.0 - self.alpha_bar[t])
    }

    /// Coefficient of x_t in μ̃_t: √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).
    pub fn posterior_mean_coef_xt(&self, t: usize) -> f64 {
        self.alpha(t).sqrt() * (1.0 - self.alpha_bar_prev(t)) / (1.0 - self.alpha_bar[t])
    }

    /// KL(q(x_T | x_0) ‖ N(0, I)) for one dimension with value `x0`, in nats (the ELBO's L_T).
    pub fn prior_kl(&self, x0: f64) -> f64 {
        let t = self.timesteps();
        let mean = self.sqrt_alpha_bar(t) * x0;
        let var = 1.0 - self.alpha_bar[t];
        normal_kl(mean, var.ln(), 0.0, 0.0)
    }
}

/// KL(N(μ1, e^{lv1}) ‖ N(μ2, e^{lv2})) for one dimension, in nats.
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    0.5 * (-1.0 + logvar2 - logvar1
        + (logvar1 - logvar2).exp()
        + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// Evenly spaced sub-sequence τ_1 < … < τ_S of {1..T}, ending at τ_S = T (DDIM, Song et al. §4.2).
///
/// τ_i = round(i·T/S); with S = T this is every step 1..T.
pub fn timestep_subsequence(timesteps: usize, steps: usize) -> Vec<usize> {
    let steps = steps.clamp(1, timesteps);
    (1..=steps)
        .map(|i| (i * timesteps + steps / 2) / steps)
        .collect()
}
