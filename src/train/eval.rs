//! The variational bound in bits/dim (Ho et al. Eq. 5; SPEC §2):
//! NLL ≤ L_T + Σ_{t>1} L_{t−1} + L_0, with L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t))
//! in closed form and L_0 = −log p_θ(x_0|x_1) under the discretized Gaussian decoder (256 bins,
//! edges ±1/255, outer bins open). The network runs on the device; the per-dimension terms are
//! computed here in f64.

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::UNet;
use crate::rng::Rng;
use crate::sampler::{Conditioning, EpsModel, Variance};
use crate::schedule::{Schedule, normal_kl};

/// The bound and its parts, in bits/dim, averaged over the images.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Elbo {
    /// Total: L_T + Σ L_{t−1} + L_0.
    pub bits_per_dim: f64,
    /// Prior term L_T.
    pub prior: f64,
    /// Σ_{t=2}^{T} L_{t−1}.
    pub diffusion: f64,
    /// Decoder term L_0.
    pub decoder: f64,
    /// Images evaluated.
    pub images: usize,
    /// Every how many timesteps a term was evaluated (1 = exact sum; k > 1: stratified
    /// estimate, k × the sum over every k-th t with a random offset).
    pub stride: usize,
}

/// Standard normal CDF, the tanh approximation of the reference implementation.
fn approx_std_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + ((2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// log p(x) of a pixel value x ∈ [−1, 1] (one of 256 levels) under N(mean, e^{2·log_scale})
/// discretized to bins of width 2/255, the outer bins extending to ±∞.
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let centered = x - mean;
    let inv_stdv = (-log_scale).exp();
    let cdf_plus = approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0));
    let cdf_min = approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
    if x < -0.999 {
        cdf_plus.max(1e-12).ln()
    } else if x > 0.999 {
        (1.0 - cdf_min).max(1e-12).ln()
    } else {
        (cdf_plus - cdf_min).max(1e-12).ln()
    }
}

/// log σ_t² of p_θ(x_{t−1}|x_t) for the chosen variance (fixed large uses β̃_2 at t = 1, as the
/// reference implementation does, since β̃_1 = 0).
fn model_log_variance(s: &Schedule, t: usize, variance: Variance) -> f64 {
    match variance {
        Variance::FixedLarge if t > 1 => s.beta(t).ln(),
        Variance::FixedLarge => s.posterior_variance(2.min(s.timesteps())).ln(),
        Variance::FixedSmall => s.posterior_log_variance_clipped(t),
    }
}

/// How to evaluate the bound.
#[derive(Debug, Clone, Copy)]
pub struct ElboOptions {
    /// Images per network call.
    pub batch: usize,
    /// Evaluate every `stride`-th timestep (1 = all T).
    pub stride: usize,
    /// Reverse-process variance of the model.
    pub variance: Variance,
    /// Seed of the forward-process noise.
    pub seed: u64,
}

/// Evaluate the bound on `images` (NCHW values in [−1, 1], quantised to 256 levels) in batches;
/// `progress(done, total)` is called after every network evaluation.
pub fn elbo(
    unet: &UNet,
    schedule: &Schedule,
    images: &[f32],
    shape: [usize; 3],
    opts: ElboOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Elbo, String> {
    let ElboOptions {
        batch,
        stride,
        variance,
        seed,
    } = opts;
    let batch = batch.max(1);
    let per: usize = shape.iter().product();
    let n = images.len() / per;
    if n == 0 {
        return Err("no images to evaluate".into());
    }
    let stride = stride.max(1);
    let t_max = schedule.timesteps();
    let ln2 = core::f64::consts::LN_2;
    let mut rng = Rng::new(seed);
    let mut total = Elbo {
        images: n,
        stride,
        ..Elbo::default()
    };
    let batches = n.div_ceil(batch);
    let work_per_batch = (t_max - 1).div_ceil(stride) + 1;
    for (bi, start) in (0..n).step_by(batch).enumerate() {
        let b = batch.min(n - start);
        let x0: Vec<f64> = images[start * per..(start + b) * per]
            .iter()
            .map(|v| *v as f64)
            .collect();

        // L_T.
        total.prior += x0.iter().map(|&x| schedule.prior_kl(x)).sum::<f64>() / ln2;

        // Σ_{t=2}^{T} L_{t−1} over every `stride`-th t, plus L_0 at t = 1.
        let offset = if stride > 1 {
            rng.below(stride as u64) as usize
        } else {
            0
        };
        let mut ts: Vec<usize> = (2 + offset..=t_max).step_by(stride).collect();
        ts.push(1);
        for (k, &t) in ts.iter().enumerate() {
            let (sa, sb) = (
                schedule.sqrt_alpha_bar(t),
                schedule.sqrt_one_minus_alpha_bar(t),
            );
            let mut x_t = Vec::with_capacity(b * per);
            for &x in &x0 {
                x_t.push(sa * x + sb * rng.normal());
            }
            let input = Tensor::<4>::from_data(
                TensorData::new(
                    x_t.iter().map(|v| *v as f32).collect::<Vec<_>>(),
                    [b, shape[0], shape[1], shape[2]],
                ),
                device,
            );
            let eps = unet
                .eps(input, t, &Conditioning::default())
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?;
            let c0 = schedule.posterior_mean_coef_x0(t);
            let ct = schedule.posterior_mean_coef_xt(t);
            let model_lv = model_log_variance(schedule, t, variance);
            let mut sum = 0.0;
            for i in 0..b * per {
                let x0_hat = (x_t[i] - sb * eps[i] as f64) / sa;
                let mean_model = c0 * x0_hat + ct * x_t[i];
                if t == 1 {
                    sum -= discretized_gaussian_log_likelihood(x0[i], mean_model, 0.5 * model_lv);
                } else {
                    let mean_true = c0 * x0[i] + ct * x_t[i];
                    let lv_true = schedule.posterior_log_variance_clipped(t);
                    sum += normal_kl(mean_true, lv_true, mean_model, model_lv);
                }
            }
            if t == 1 {
                total.decoder += sum / ln2;
            } else {
                total.diffusion += sum * stride as f64 / ln2;
            }
            progress(bi * work_per_batch + k + 1, batches * work_per_batch);
        }
    }
    let dims = (n * per) as f64;
    total.prior /= dims;
    total.diffusion /= dims;
    total.decoder /= dims;
    total.bits_per_dim = total.prior + total.diffusion + total.decoder;
    Ok(total)
}
