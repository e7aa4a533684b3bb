//! The U-Net ε_θ(x_t, t[, y]) of Ho et al. (their Appendix B, after PixelCNN++).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, EmbeddingConfig, GroupNorm, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor};

use super::blocks::{AttentionBlock, Downsample, ResBlock, Upsample, conv3x3, group_norm};
use super::config::{ConfigError, UNetConfig};
use super::embedding::timestep_embedding;

/// One residual block, optionally followed by self-attention.
#[derive(Module, Debug)]
pub struct Stage {
    res: ResBlock,
    attn: Option<AttentionBlock>,
}

impl Stage {
    fn forward(&self, x: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
        let h = self.res.forward(x, temb);
        match &self.attn {
            Some(attn) => attn.forward(h),
            None => h,
        }
    }
}

/// One encoder level: `res_blocks` stages, then a downsampling (except on the last level).
#[derive(Module, Debug)]
pub struct DownLevel {
    stages: Vec<Stage>,
    down: Option<Downsample>,
}

/// One decoder level: `res_blocks + 1` stages that each take a skip, then an upsampling
/// (except on the top level).
#[derive(Module, Debug)]
pub struct UpLevel {
    stages: Vec<Stage>,
    up: Option<Upsample>,
}

/// The noise-prediction network.
#[derive(Module, Debug)]
pub struct UNet {
    time_mlp1: Linear,
    time_mlp2: Linear,
    class_embed: Option<Embedding>,
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid1: ResBlock,
    mid_attn: AttentionBlock,
    mid2: ResBlock,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    base_channels: usize,
    num_classes: usize,
}

impl UNetConfig {
    /// Build a freshly initialised U-Net, or say why this config cannot be built.
    pub fn init(&self, device: &Device) -> Result<UNet, ConfigError> {
        self.validate()?;
        let ch = self.base_channels;
        let temb = self.time_embed_dim();
        let (g, p) = (self.groups, self.dropout);
        let levels = self.channel_mults.len();
        let resolutions = self.resolutions();
        let stage = |c_in: usize, c_out: usize, res: usize| Stage {
            res: ResBlock::new(c_in, c_out, temb, g, p, device),
            attn: self
                .attention_resolutions
                .contains(&res)
                .then(|| AttentionBlock::new(c_out, g, device)),
        };

        // Encoder; `skips` tracks the channel count of every activation pushed for the decoder.
        let mut skips = vec![ch];
        let mut c = ch;
        let mut down = Vec::with_capacity(levels);
        for (i, &mult) in self.channel_mults.iter().enumerate() {
            let c_out = ch * mult;
            let mut stages = Vec::new();
            for _ in 0..self.res_blocks {
                stages.push(stage(c, c_out, resolutions[i]));
                c = c_out;
                skips.push(c);
            }
            let down_block = (i + 1 < levels).then(|| Downsample::new(c, device));
            if down_block.is_some() {
                skips.push(c);
            }
            down.push(DownLevel {
                stages,
                down: down_block,
            });
        }

        let mid1 = ResBlock::new(c, c, temb, g, p, device);
        let mid_attn = AttentionBlock::new(c, g, device);
        let mid2 = ResBlock::new(c, c, temb, g, p, device);

        let mut up = Vec::with_capacity(levels);
        for (i, &mult) in self.channel_mults.iter().enumerate().rev() {
            let c_out = ch * mult;
            let mut stages = Vec::new();
            for _ in 0..=self.res_blocks {
                let skip = skips.pop().expect("one skip per decoder stage");
                stages.push(stage(c + skip, c_out, resolutions[i]));
                c = c_out;
            }
            up.push(UpLevel {
                stages,
                up: (i > 0).then(|| Upsample::new(c, device)),
            });
        }

        Ok(UNet {
            time_mlp1: LinearConfig::new(ch, temb).init(device),
            time_mlp2: LinearConfig::new(temb, temb).init(device),
            class_embed: (self.num_classes > 0)
                .then(|| EmbeddingConfig::new(self.num_classes + 1, temb).init(device)),
            conv_in: conv3x3(self.image_channels, ch, 1, device),
            down,
            mid1,
            mid_attn,
            mid2,
            up,
            norm_out: group_norm(g, c, device),
            conv_out: conv3x3(c, self.image_channels, 1, device),
            base_channels: ch,
            num_classes: self.num_classes,
        })
    }
}

impl UNet {
    /// Number of class labels the model was built for (0 = unconditional).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// ε_θ(x_t, t, y). `x`: [B, C, H, W]; `t`: [B] with the paper's t ∈ 1..T (as floats);
    /// `labels`: [B] class indices, where `num_classes` means "no label". A conditional model
    /// given no labels uses "no label"; an unconditional model ignores labels.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, labels: Option<Tensor<1, Int>>) -> Tensor<4> {
        let device = x.device();
        let batch = x.dims()[0];
        let mut temb = timestep_embedding(t, self.base_channels, &device);
        temb = self.time_mlp2.forward(silu(self.time_mlp1.forward(temb)));
        if let Some(embed) = &self.class_embed {
            let labels = labels.unwrap_or_else(|| {
                Tensor::<1, Int>::full([batch], self.num_classes as i64, &device)
            });
            let e = embed.forward(labels.reshape([batch, 1]));
            let dim = e.dims()[2];
            temb = temb + e.reshape([batch, dim]);
        }

        let mut h = self.conv_in.forward(x);
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for stage in &level.stages {
                h = stage.forward(h, temb.clone());
                skips.push(h.clone());
            }
            if let Some(down) = &level.down {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }
        h = self.mid1.forward(h, temb.clone());
        h = self.mid_attn.forward(h);
        h = self.mid2.forward(h, temb.clone());
        for level in &self.up {
            for stage in &level.stages {
                let skip = skips
                    .pop()
                    .expect("encoder pushed one skip per decoder stage");
                h = stage.forward(Tensor::cat(vec![h, skip], 1), temb.clone());
            }
            if let Some(up) = &level.up {
                h = up.forward(h);
            }
        }
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}
