//! What a sampler needs from a noise model, and the U-Net's classifier-free guidance.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::UNet;

/// Conditioning for one run: an optional class and the guidance scale w.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditioning {
    /// Class label, or `None` for unconditional sampling.
    pub class: Option<usize>,
    /// Guidance scale w (0 = plain conditional).
    pub guidance: f64,
}

/// A noise-prediction model ε(x_t, t).
pub trait EpsModel {
    /// Predict ε for the batch `x` at the paper's timestep `t` (same t for the whole batch).
    fn eps(&self, x: Tensor<4>, t: usize, cond: &Conditioning) -> Tensor<4>;
}

impl EpsModel for UNet {
    fn eps(&self, x: Tensor<4>, t: usize, cond: &Conditioning) -> Tensor<4> {
        let device = x.device();
        let batch = x.dims()[0];
        let null = self.num_classes();
        let labels = |class: usize, n: usize| {
            Tensor::<1, Int>::from_data(TensorData::new(vec![class as i64; n], [n]), &device)
        };
        let times = |n: usize| Tensor::<1>::full([n], t as f32, &device);
        match cond.class {
            Some(c) if null > 0 && cond.guidance != 0.0 => {
                // Both passes in one batch: [x with label c; x with "no label"].
                let mut ids = vec![c as i64; batch];
                ids.extend(std::iter::repeat_n(null as i64, batch));
                let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [2 * batch]), &device);
                let out = self.forward(
                    Tensor::cat(vec![x.clone(), x], 0),
                    times(2 * batch),
                    Some(ids),
                );
                let cond_eps = out.clone().narrow(0, 0, batch);
                let uncond_eps = out.narrow(0, batch, batch);
                let w = cond.guidance;
                cond_eps.mul_scalar(1.0 + w) - uncond_eps.mul_scalar(w)
            }
            Some(c) if null > 0 => self.forward(x, times(batch), Some(labels(c, batch))),
            _ => self.forward(x, times(batch), None),
        }
    }
}
