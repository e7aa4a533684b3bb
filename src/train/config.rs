//! The training configuration, saved with every checkpoint.

use burn::config::Config;

use crate::model::UNetConfig;
use crate::schedule::ScheduleConfig;

/// Hyper-parameters of a training run (SPEC §2: the paper's settings are the defaults).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Dataset: `mnist`, `fashion`, `emoji` or `synthetic`.
    pub dataset: String,
    /// The U-Net to train.
    pub model: UNetConfig,
    /// The forward-process schedule.
    #[config(default = "ScheduleConfig::new()")]
    pub schedule: ScheduleConfig,
    /// Total optimizer steps.
    #[config(default = 100_000)]
    pub steps: u64,
    /// Examples per step.
    #[config(default = 128)]
    pub batch_size: usize,
    /// Adam learning rate (after warm-up).
    #[config(default = 2e-4)]
    pub lr: f64,
    /// Linear learning-rate warm-up steps.
    #[config(default = 5000)]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value (0 = off).
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Adam β₁.
    #[config(default = 0.9)]
    pub beta1: f64,
    /// Adam β₂.
    #[config(default = 0.999)]
    pub beta2: f64,
    /// Adam ε.
    #[config(default = 1e-8)]
    pub adam_eps: f64,
    /// EMA decay of the weights (samples and exports use the EMA).
    #[config(default = 0.9999)]
    pub ema_decay: f64,
    /// Ramp the EMA decay up as min(decay, (1+n)/(10+n)) so short runs are not dominated by
    /// the initialisation.
    #[config(default = true)]
    pub ema_warmup: bool,
    /// Probability of replacing a label by "no label" (classifier-free guidance training).
    #[config(default = 0.1)]
    pub label_dropout: f64,
    /// Random horizontal flips (`None`: the dataset's default — only emoji are flipped; digits
    /// and Fashion-MNIST's shoes and bags face one way).
    #[config(default = "None")]
    pub flip: Option<bool>,
    /// Write a checkpoint every this many steps.
    #[config(default = 1000)]
    pub checkpoint_every: u64,
    /// Write a sample grid (EMA weights, DDIM 50 steps) every this many steps (0 = never).
    #[config(default = 5000)]
    pub sample_every: u64,
    /// Seed of data order, timesteps, noise and initialisation.
    #[config(default = 0)]
    pub seed: u64,
}
