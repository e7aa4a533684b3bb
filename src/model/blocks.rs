//! U-Net building blocks: residual block with time embedding, self-attention, resampling.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Tensor};

pub(crate) fn conv3x3(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

fn conv1x1(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [1, 1]).init(device)
}

pub(crate) fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(1e-6)
        .init(device)
}

/// Residual block: GN → SiLU → conv → (+ projected time embedding) → GN → SiLU → dropout →
/// conv, plus a 1×1-projected shortcut when the channel count changes.
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResBlock {
    pub fn new(
        c_in: usize,
        c_out: usize,
        temb_dim: usize,
        groups: usize,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, c_in, device),
            conv1: conv3x3(c_in, c_out, 1, device),
            temb_proj: LinearConfig::new(temb_dim, c_out).init(device),
            norm2: group_norm(groups, c_out, device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv3x3(c_out, c_out, 1, device),
            shortcut: (c_in != c_out).then(|| conv1x1(c_in, c_out, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let [b, c] = [h.dims()[0], h.dims()[1]];
        let h = h + self.temb_proj.forward(silu(temb)).reshape([b, c, 1, 1]);
        let h = self
            .conv2
            .forward(self.dropout.forward(silu(self.norm2.forward(h))));
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

/// Single-head self-attention over all positions of a feature map, with a residual connection.
#[derive(Module, Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
}

impl AttentionBlock {
    pub fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let lin = || LinearConfig::new(channels, channels).init(device);
        Self {
            norm: group_norm(groups, channels, device),
            q: lin(),
            k: lin(),
            v: lin(),
            proj: lin(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        // [B, C, H, W] → [B, HW, C]
        let seq = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let q = self.q.forward(seq.clone());
        let k = self.k.forward(seq.clone());
        let v = self.v.forward(seq);
        let scores = q
            .matmul(k.swap_dims(1, 2))
            .mul_scalar(1.0 / (c as f64).sqrt());
        let out = self.proj.forward(softmax(scores, 2).matmul(v));
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}

/// Halve the resolution with a stride-2 3×3 convolution.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: conv3x3(channels, channels, 2, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// Double the resolution (nearest neighbour) and apply a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: conv3x3(channels, channels, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(upsample_nearest2x(x))
    }
}

/// Nearest-neighbour 2× upsampling by broadcasting (works identically on every backend).
pub fn upsample_nearest2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, h * 2, w * 2])
}
