//! The U-Net's configuration, stored with the weights.

use burn::config::Config;

/// Everything that shapes the U-Net ε_θ(x_t, t). Models for the browser are small; the paper's
/// CIFAR-10 model is `base_channels = 128, channel_mults = [1, 2, 2, 2], res_blocks = 2,
/// attention_resolutions = [16], dropout = 0.1` (35.7M parameters).
#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    /// Image channels (1 for grey, 3 for RGB).
    #[config(default = 1)]
    pub image_channels: usize,
    /// Image height and width.
    #[config(default = 28)]
    pub image_size: usize,
    /// Channels of the first level.
    #[config(default = 32)]
    pub base_channels: usize,
    /// Channel multiplier per resolution level; one downsampling between levels.
    #[config(default = "vec![1, 2, 2]")]
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level (the decoder has one more to take the skips).
    #[config(default = 2)]
    pub res_blocks: usize,
    /// Feature-map sizes (side length) at which self-attention follows each residual block.
    #[config(default = "vec![7]")]
    pub attention_resolutions: Vec<usize>,
    /// GroupNorm groups.
    #[config(default = 8)]
    pub groups: usize,
    /// Dropout probability inside residual blocks (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Number of class labels (0 = unconditional). A conditional model has one extra embedding
    /// row, index `num_classes`, meaning "no label" (classifier-free guidance).
    #[config(default = 0)]
    pub num_classes: usize,
}

/// Why a U-Net configuration cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid U-Net config: {0}")]
pub struct ConfigError(pub String);

impl UNetConfig {
    /// The width of the time embedding (4 × base channels, as in the paper's code).
    pub fn time_embed_dim(&self) -> usize {
        self.base_channels * 4
    }

    /// Check every constraint `init` relies on, so a bad config is an error and never a panic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !(1..=4).contains(&self.image_channels) {
            return err(format!(
                "image_channels must be 1..=4, got {}",
                self.image_channels
            ));
        }
        if self.channel_mults.is_empty() || self.channel_mults.len() > 6 {
            return err(format!(
                "channel_mults needs 1..=6 levels, got {:?}",
                self.channel_mults
            ));
        }
        if self.base_channels == 0 || self.base_channels > 1024 {
            return err(format!(
                "base_channels must be 1..=1024, got {}",
                self.base_channels
            ));
        }
        if !self.base_channels.is_multiple_of(2) {
            return err(format!(
                "base_channels must be even (sinusoidal embedding), got {}",
                self.base_channels
            ));
        }
        if self.res_blocks == 0 || self.res_blocks > 8 {
            return err(format!("res_blocks must be 1..=8, got {}", self.res_blocks));
        }
        if self.groups == 0 {
            return err("groups must be at least 1".into());
        }
        for &m in &self.channel_mults {
            if m == 0 || m > 16 {
                return err(format!("channel multipliers must be 1..=16, got {m}"));
            }
            if !(self.base_channels * m).is_multiple_of(self.groups) {
                return err(format!(
                    "{} channels (base {} × {m}) are not divisible into {} groups",
                    self.base_channels * m,
                    self.base_channels,
                    self.groups
                ));
            }
        }
        let factor = 1usize << (self.channel_mults.len() - 1);
        if self.image_size == 0 || self.image_size > 512 || !self.image_size.is_multiple_of(factor)
        {
            return err(format!(
                "image_size {} must be in 1..=512 and divisible by {factor} ({} levels downsample {} times)",
                self.image_size,
                self.channel_mults.len(),
                self.channel_mults.len() - 1
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.num_classes > 100_000 {
            return err(format!("num_classes too large: {}", self.num_classes));
        }
        Ok(())
    }

    /// Side length of the feature map at each level.
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.channel_mults.len())
            .map(|i| self.image_size >> i)
            .collect()
    }
}

impl UNetConfig {
    /// Named configurations: `tiny` (tests), `mnist` and `fashion` (28×28 grey, 10 classes, and
    /// their `-small` / `-wide` / `-large` variants), `emoji` and `emoji-wide` (32×32 RGB),
    /// `cifar10-paper` (the paper's 35.7M-parameter CIFAR-10 model).
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "tiny" => Self::new()
                .with_base_channels(8)
                .with_channel_mults(vec![1, 2])
                .with_res_blocks(1)
                .with_attention_resolutions(vec![14])
                .with_groups(4)
                .with_dropout(0.0),
            "tiny-classes" => Self::preset("tiny")?.with_num_classes(10),
            // The shipped MNIST / Fashion-MNIST models: narrow at 28×28 (where convolutions
            // cost the most), wide at 7×7 (where parameters are cheap), so they train and sample
            // on a CPU (0.69M parameters).
            "mnist" | "fashion" => Self::new()
                .with_base_channels(16)
                .with_channel_mults(vec![1, 2, 4])
                .with_res_blocks(1)
                .with_groups(4)
                .with_dropout(0.0)
                .with_num_classes(10),
            // The shipped layout with 4× the channels at 14×14 and 7×7, where the digit's (or
            // garment's) overall shape is decided: 2.57M parameters for half the CPU speed of
            // `mnist` (0.44 against 0.88 steps/s at batch 64 on one thread); `mnist-large` trains
            // at a third of it (0.28).
            "mnist-wide" | "fashion-wide" => {
                Self::preset("mnist")?.with_channel_mults(vec![1, 4, 8])
            }
            // The paper-style layout at MNIST size (1.6M parameters; for a GPU).
            "mnist-large" | "fashion-large" => Self::new().with_num_classes(10),
            // Small enough to train on a CPU in an hour (about 0.3M parameters).
            "mnist-small" => Self::new()
                .with_base_channels(16)
                .with_res_blocks(1)
                .with_groups(4)
                .with_dropout(0.0)
                .with_num_classes(10),
            // 32×32 RGB, unconditional: 32 → 16 → 8 → 4 with attention at 8×8.
            "emoji" => Self::new()
                .with_image_channels(3)
                .with_image_size(32)
                .with_base_channels(16)
                .with_channel_mults(vec![1, 2, 4, 4])
                .with_res_blocks(1)
                .with_attention_resolutions(vec![8])
                .with_groups(4)
                .with_dropout(0.0),
            // `emoji` with more channels at 16×16 and below, where an emoji's shape is decided
            // (the idea of `mnist-wide`), for the objects and animals `emoji` draws as mush:
            // 2.54M parameters, 5.1 MB in f16.
            "emoji-wide" => Self::preset("emoji")?.with_channel_mults(vec![1, 4, 6, 6]),
            "cifar10-paper" => Self::new()
                .with_image_channels(3)
                .with_image_size(32)
                .with_base_channels(128)
                .with_channel_mults(vec![1, 2, 2, 2])
                .with_attention_resolutions(vec![16])
                .with_groups(32),
            _ => return None,
        })
    }

    /// The names [`UNetConfig::preset`] knows.
    pub const PRESETS: &'static [&'static str] = &[
        "tiny",
        "tiny-classes",
        "mnist",
        "mnist-small",
        "mnist-large",
        "mnist-wide",
        "fashion",
        "fashion-large",
        "fashion-wide",
        "emoji",
        "emoji-wide",
        "cifar10-paper",
    ];
}
