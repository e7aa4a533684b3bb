//! The step-by-step reverse-process engine shared by DDPM and DDIM.
//!
//! [`Sampler::step`] queues one network evaluation and the update on the device and returns the
//! new x and x̂₀ as tensors without reading them back, so the same engine is driven from sync
//! code (read with `into_data`) and from async code in the browser (`into_data_async`).

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{SamplerConfig, SamplerKind, Variance};
use super::model::{Conditioning, EpsModel};
use crate::rng::BatchNoise;
use crate::schedule::{Schedule, timestep_subsequence};

/// Why a sampling run cannot start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid sampler options: {0}")]
pub struct SamplerError(pub String);

/// The f64 coefficients of one reverse step from t to t_prev, computed on the CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefs {
    /// Model timestep t.
    pub t: usize,
    /// Timestep reached by this step (0 after the last step).
    pub t_prev: usize,
    /// ᾱ_t.
    pub alpha_bar: f64,
    /// ᾱ_{t_prev} (1 when t_prev = 0).
    pub alpha_bar_prev: f64,
    /// β of this (possibly respaced) step: 1 − ᾱ_t/ᾱ_{t_prev}; exactly β_t when t_prev = t − 1.
    pub beta: f64,
    /// Noise scale σ of this step (0 on the last step and for deterministic DDIM).
    pub sigma: f64,
}

/// What one step produced.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based number of this step.
    pub index: usize,
    /// Steps in the whole run.
    pub total: usize,
    /// Model timestep t that was evaluated.
    pub t: usize,
    /// Timestep of `x` (t_prev; 0 means x is the final sample x_0).
    pub t_prev: usize,
    /// x_{t_prev}, shape [N, C, H, W], values nominally in [−1, 1].
    pub x: Tensor<4>,
    /// The prediction x̂₀ made from x_t (clipped if the sampler clips).
    pub x0: Tensor<4>,
}

/// A reverse-diffusion run in progress.
pub struct Sampler {
    config: SamplerConfig,
    cond: Conditioning,
    plan: Vec<StepCoefs>,
    shape: [usize; 4],
    x: Tensor<4>,
    noise: BatchNoise,
    next: usize,
    device: Device,
}

impl Sampler {
    /// Plan the run and draw x_T ~ N(0, I) from the seeded generator.
    /// `image` is [channels, height, width]; `num_classes` is the model's (0 = unconditional).
    pub fn new(
        schedule: &Schedule,
        config: &SamplerConfig,
        image: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, SamplerError> {
        let plan = plan_steps(schedule, config)?;
        if config.count == 0 || config.count > 4096 {
            return Err(SamplerError(format!(
                "count must be 1..=4096, got {}",
                config.count
            )));
        }
        if !config.guidance.is_finite() || config.guidance < 0.0 || config.guidance > 100.0 {
            return Err(SamplerError(format!(
                "guidance must be in 0..=100, got {}",
                config.guidance
            )));
        }
        if let Some(c) = config.class {
            if num_classes == 0 {
                return Err(SamplerError(
                    "this model was trained without labels; it cannot sample a class".into(),
                ));
            }
            if c >= num_classes {
                return Err(SamplerError(format!(
                    "class {c} out of range: the model knows classes 0..{}",
                    num_classes - 1
                )));
            }
        } else if config.guidance != 0.0 {
            return Err(SamplerError("guidance needs a class".into()));
        }
        let [c, h, w] = image;
        let shape = [config.count, c, h, w];
        let mut noise = BatchNoise::new(config.seed, config.count);
        let x = Tensor::<4>::from_data(TensorData::new(noise.next(c * h * w), shape), device);
        Ok(Self {
            config: config.clone(),
            cond: Conditioning {
                class: config.class,
                guidance: config.guidance,
            },
            plan,
            shape,
            x,
            noise,
            next: 0,
            device: device.clone(),
        })
    }

    /// The current x (x_T before the first step).
    pub fn x(&self) -> &Tensor<4> {
        &self.x
    }

    /// The planned steps, first to last.
    pub fn plan(&self) -> &[StepCoefs] {
        &self.plan
    }

    /// Total number of steps.
    pub fn total(&self) -> usize {
        self.plan.len()
    }

    /// Steps done so far.
    pub fn done(&self) -> usize {
        self.next
    }

    /// True once x is x_0.
    pub fn is_finished(&self) -> bool {
        self.next >= self.plan.len()
    }

    /// Run one reverse step; `None` once finished.
    pub fn step<M: EpsModel + ?Sized>(&mut self, model: &M) -> Option<Step> {
        let coefs = *self.plan.get(self.next)?;
        self.next += 1;
        let x = self.x.clone();
        let eps = model.eps(x.clone(), coefs.t, &self.cond);
        let z = if coefs.sigma > 0.0 {
            let [_, c, h, w] = self.shape;
            Some(Tensor::<4>::from_data(
                TensorData::new(self.noise.next(c * h * w), self.shape),
                &self.device,
            ))
        } else {
            None
        };
        let (x_prev, x0) = match self.config.kind {
            SamplerKind::Ddpm => ddpm_update(x, eps, &coefs, self.config.clip_x0),
            SamplerKind::Ddim => ddim_update(x, eps, &coefs, self.config.clip_x0),
        };
        let x_prev = match z {
            Some(z) => x_prev + z.mul_scalar(coefs.sigma),
            None => x_prev,
        };
        self.x = x_prev.clone();
        Some(Step {
            index: self.next,
            total: self.plan.len(),
            t: coefs.t,
            t_prev: coefs.t_prev,
            x: x_prev,
            x0,
        })
    }

    /// Run every remaining step and return x_0.
    pub fn run<M: EpsModel + ?Sized>(mut self, model: &M) -> Tensor<4> {
        while self.step(model).is_some() {}
        self.x
    }
}

/// The coefficients of every step of a run, from t = T (or the top of the sub-sequence) down.
pub fn plan_steps(
    schedule: &Schedule,
    config: &SamplerConfig,
) -> Result<Vec<StepCoefs>, SamplerError> {
    let t_max = schedule.timesteps();
    if config.steps == 0 || config.steps > t_max {
        return Err(SamplerError(format!(
            "steps must be 1..={t_max} (the model's T), got {}",
            config.steps
        )));
    }
    if !config.eta.is_finite() || !(0.0..=1.0).contains(&config.eta) {
        return Err(SamplerError(format!(
            "eta must be in [0, 1], got {}",
            config.eta
        )));
    }
    let seq = timestep_subsequence(t_max, config.steps);
    let mut plan = Vec::with_capacity(seq.len());
    for i in (0..seq.len()).rev() {
        let t = seq[i];
        let t_prev = if i == 0 { 0 } else { seq[i - 1] };
        let ab = schedule.alpha_bar(t);
        let ab_prev = schedule.alpha_bar(t_prev);
        let beta = if t_prev + 1 == t {
            schedule.beta(t)
        } else {
            1.0 - ab / ab_prev
        };
        let sigma = if t_prev == 0 {
            0.0
        } else {
            match config.kind {
                SamplerKind::Ddpm => match config.variance {
                    Variance::FixedLarge => beta.sqrt(),
                    Variance::FixedSmall => ((1.0 - ab_prev) / (1.0 - ab) * beta).sqrt(),
                },
                SamplerKind::Ddim => {
                    config.eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt()
                }
            }
        };
        plan.push(StepCoefs {
            t,
            t_prev,
            alpha_bar: ab,
            alpha_bar_prev: ab_prev,
            beta,
            sigma,
        });
    }
    Ok(plan)
}

/// x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t.
fn predict_x0(x: Tensor<4>, eps: Tensor<4>, ab: f64) -> Tensor<4> {
    x.mul_scalar(1.0 / ab.sqrt()) - eps.mul_scalar((1.0 / ab - 1.0).sqrt())
}

/// DDPM mean (Algorithm 2, or the posterior mean μ̃_t(x_t, clip(x̂₀)) when clipping); the
/// caller adds σ z.
fn ddpm_update(x: Tensor<4>, eps: Tensor<4>, c: &StepCoefs, clip: bool) -> (Tensor<4>, Tensor<4>) {
    let (ab, ab_prev, beta) = (c.alpha_bar, c.alpha_bar_prev, c.beta);
    let alpha = 1.0 - beta;
    let x0 = predict_x0(x.clone(), eps.clone(), ab);
    if clip {
        let x0 = x0.clamp(-1.0, 1.0);
        let coef_x0 = ab_prev.sqrt() * beta / (1.0 - ab);
        let coef_xt = alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab);
        (x0.clone().mul_scalar(coef_x0) + x.mul_scalar(coef_xt), x0)
    } else {
        // μ_θ = (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε)   (Eq. 11)
        let mean = (x - eps.mul_scalar(beta / (1.0 - ab).sqrt())).mul_scalar(1.0 / alpha.sqrt());
        (mean, x0)
    }
}

/// DDIM (Song et al. Eq. 12) without the σ z term: √ᾱ' x̂₀ + √(1−ᾱ'−σ²) ε.
fn ddim_update(x: Tensor<4>, eps: Tensor<4>, c: &StepCoefs, clip: bool) -> (Tensor<4>, Tensor<4>) {
    let (ab, ab_prev) = (c.alpha_bar, c.alpha_bar_prev);
    let mut x0 = predict_x0(x.clone(), eps.clone(), ab);
    let mut eps = eps;
    if clip {
        x0 = x0.clamp(-1.0, 1.0);
        // Keep x̂₀ and ε consistent with x_t after clipping.
        eps = (x - x0.clone().mul_scalar(ab.sqrt())).mul_scalar(1.0 / (1.0 - ab).sqrt());
    }
    let dir = (1.0 - ab_prev - c.sigma * c.sigma).max(0.0).sqrt();
    (
        x0.clone().mul_scalar(ab_prev.sqrt()) + eps.mul_scalar(dir),
        x0,
    )
}
