//! Sinusoidal timestep embedding (the Transformer's position embedding, as in Ho et al. §4).

use burn::tensor::{Device, Tensor, TensorData};

/// The frequencies ω_i = exp(−ln(10000)·i/(h−1)), i = 0..h−1, h = dim/2 (DDPM reference code).
pub fn frequencies(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let denom = (half.max(2) - 1) as f64;
    (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / denom).exp() as f32)
        .collect()
}

/// Embed timesteps `t` (shape [B], values are the paper's t) into [B, dim]:
/// `[sin(t·ω_0) … sin(t·ω_{h−1}), cos(t·ω_0) … cos(t·ω_{h−1})]`.
pub fn timestep_embedding(t: Tensor<1>, dim: usize, device: &Device) -> Tensor<2> {
    let freqs = frequencies(dim);
    let half = freqs.len();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), device);
    let [batch] = t.dims();
    let args = t.reshape([batch, 1]) * freqs.reshape([1, half]);
    Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
}
