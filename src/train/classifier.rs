//! A small CNN classifier the project trains itself, used to score samples: confident
//! fraction, class histogram, and the Fréchet distance between its penultimate features of
//! generated and real images.

// Dense linear algebra below (covariances, Jacobi rotations) reads clearer with indices.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::GradientsParams;
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;

use super::data::{Batcher, Dataset};
use super::optim::{AdamState, AdamStep, adam_update};
use crate::weights::{self, WeightsError};

/// Shape of the classifier.
#[derive(Config, Debug, PartialEq)]
pub struct ClassifierConfig {
    /// Image channels.
    pub channels: usize,
    /// Image side (divisible by 4).
    pub size: usize,
    /// Number of classes.
    pub classes: usize,
    /// Width of the penultimate feature layer.
    #[config(default = 128)]
    pub features: usize,
}

/// conv(32) → pool → conv(64) → pool → fc(features) → fc(classes).
#[derive(Module, Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

fn pool2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / 2, 2, w / 2, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([b, c, h / 2, w / 2])
}

impl ClassifierConfig {
    /// A freshly initialised classifier.
    pub fn init(&self, device: &Device) -> Result<Classifier, String> {
        if !self.size.is_multiple_of(4) || self.classes == 0 || self.channels == 0 {
            return Err(format!("invalid classifier config {self:?}"));
        }
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let flat = 64 * (self.size / 4) * (self.size / 4);
        Ok(Classifier {
            conv1: conv(self.channels, 32),
            conv2: conv(32, 64),
            fc1: LinearConfig::new(flat, self.features).init(device),
            fc2: LinearConfig::new(self.features, self.classes).init(device),
        })
    }
}

impl Classifier {
    /// Penultimate features [B, features].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let h = pool2(relu(self.conv1.forward(x)));
        let h = pool2(relu(self.conv2.forward(h)));
        let [b, c, hh, ww] = h.dims();
        relu(self.fc1.forward(h.reshape([b, c * hh * ww])))
    }

    /// Class logits [B, classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc2.forward(self.features(x))
    }
}

/// Train on `data` with cross-entropy and Adam; returns the classifier and its final loss.
pub fn train_classifier(
    data: &Dataset,
    config: &ClassifierConfig,
    steps: u64,
    batch: usize,
    seed: u64,
    device: &Device,
    mut progress: impl FnMut(u64, f64),
) -> Result<(Classifier, f64), String> {
    let ad = device.clone().autodiff();
    device.seed(seed);
    let mut model = config.init(&ad)?;
    let mut adam = AdamState::default();
    let mut batcher = Batcher::new(data.len(), seed, false);
    let [c, h, w] = data.shape;
    let mut last = f64::NAN;
    for step in 0..steps {
        let (x, y) = batcher.next(data, batch);
        let mut onehot = vec![0f32; batch * config.classes];
        for (i, &label) in y.iter().enumerate() {
            onehot[i * config.classes + label as usize] = 1.0;
        }
        let x = Tensor::<4>::from_data(TensorData::new(x, [batch, c, h, w]), &ad);
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [batch, config.classes]), &ad);
        // Clones, inputs kept alive: see `optim::mse_loss` on Burn's fusion.
        let log_p = log_softmax(model.forward(x), 1);
        let loss = (log_p.clone() * onehot.clone())
            .sum()
            .neg()
            .div_scalar(batch as f64);
        let grads = loss.backward();
        last = loss.into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(grads, &model);
        // 100 warm-up steps, then cosine decay to 0: converged, decisive predictions.
        let progress_frac = step as f64 / steps.max(1) as f64;
        let lr = 1e-3
            * ((step + 1) as f64 / 100.0).min(1.0)
            * 0.5
            * (1.0 + (std::f64::consts::PI * progress_frac).cos());
        model = adam_update(
            model,
            &grads,
            &mut adam,
            AdamStep {
                lr,
                grad_scale: 1.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        );
        progress(step + 1, last);
    }
    Ok((model.valid(), last))
}

/// Save as safetensors with `format = "ddpm-web-classifier"` and the config as metadata.
pub fn save(
    model: &Classifier,
    config: &ClassifierConfig,
    dataset: &str,
) -> Result<Vec<u8>, String> {
    use safetensors::tensor::{Dtype, TensorView};
    let values = weights::parameter_values(model);
    let bytes: Vec<Vec<u8>> = values
        .iter()
        .map(|(_, _, v)| {
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect()
        })
        .collect();
    let views = values
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| TensorView::new(Dtype::F16, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let meta: HashMap<String, String> = [
        ("format".to_string(), "ddpm-web-classifier".to_string()),
        (
            "config".to_string(),
            serde_json::to_string(config).map_err(|e| e.to_string())?,
        ),
        ("dataset".to_string(), dataset.to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::serialize(views, Some(meta.into_iter().collect())).map_err(|e| e.to_string())
}

/// Load a classifier saved by [`save`]: (model, config, dataset name).
pub fn load(
    bytes: &[u8],
    device: &Device,
) -> Result<(Classifier, ClassifierConfig, String), WeightsError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Corrupt(e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Corrupt(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some("ddpm-web-classifier") {
        return Err(WeightsError::WrongKind(
            "not a ddpm-web classifier file".into(),
        ));
    }
    let config: ClassifierConfig =
        serde_json::from_str(meta.get("config").map(String::as_str).unwrap_or(""))
            .map_err(|e| WeightsError::Manifest(e.to_string()))?;
    let model = config.init(device).map_err(WeightsError::Manifest)?;
    let model = weights::load_tensors_into(model, &st, device)?;
    Ok((
        model,
        config,
        meta.get("dataset").cloned().unwrap_or_default(),
    ))
}

/// Index of the largest value (the predicted class of a probability row).
pub fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// The classifier labels an image with probability ≥ 0.9 (the "confident").
pub fn is_confident(p: &[f64]) -> bool {
    p[argmax(p)] >= 0.9
}

/// One row of f64 values per image.
pub type Rows = Vec<Vec<f64>>;

/// Class probabilities [N, classes] and penultimate features [N, features] of NCHW images.
pub fn probe(
    model: &Classifier,
    images: &[f32],
    shape: [usize; 3],
    device: &Device,
) -> Result<(Rows, Rows), String> {
    let per: usize = shape.iter().product();
    let n = images.len() / per;
    let (mut probs, mut feats) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for start in (0..n).step_by(256) {
        let b = 256.min(n - start);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                images[start * per..(start + b) * per].to_vec(),
                [b, shape[0], shape[1], shape[2]],
            ),
            device,
        );
        let f = model.features(x);
        let p = softmax(model.fc2.forward(f.clone()), 1);
        let rows = |t: Tensor<2>| -> Result<Rows, String> {
            let [r, c] = t.dims();
            let v = t
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?;
            Ok((0..r)
                .map(|i| v[i * c..(i + 1) * c].iter().map(|x| *x as f64).collect())
                .collect())
        };
        probs.extend(rows(p)?);
        feats.extend(rows(f)?);
    }
    Ok((probs, feats))
}

/// Mean of feature rows (what the Fréchet distance's mean term compares).
pub fn mean(x: &[Vec<f64>]) -> Vec<f64> {
    let n = x.len() as f64;
    let mut mu = vec![0.0; x.first().map_or(0, Vec::len)];
    for r in x {
        for (m, v) in mu.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    mu
}

fn mean_cov(x: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = x.len() as f64;
    let d = x[0].len();
    let mu = mean(x);
    let mut cov = vec![vec![0.0; d]; d];
    for r in x {
        for i in 0..d {
            let a = r[i] - mu[i];
            for j in i..d {
                cov[i][j] += a * (r[j] - mu[j]) / (n - 1.0).max(1.0);
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[i][j] = cov[j][i];
        }
    }
    (mu, cov)
}

/// Eigen-decomposition of a symmetric matrix (cyclic Jacobi): (eigenvalues, eigenvectors as
/// columns).
pub fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (n, m, k) = (a.len(), b[0].len(), b.len());
    let mut out = vec![vec![0.0; m]; n];
    for i in 0..n {
        for l in 0..k {
            let x = a[i][l];
            for j in 0..m {
                out[i][j] += x * b[l][j];
            }
        }
    }
    out
}

/// Fréchet distance between Gaussians fitted to two feature sets:
/// ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}).
pub fn frechet_distance(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mu1, s1) = mean_cov(a);
    let (mu2, s2) = mean_cov(b);
    let d = mu1.len();
    // Tr((Σ₁Σ₂)^{1/2}) = Σ √λ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}).
    let (l1, v1) = symmetric_eigen(s1.clone());
    let sqrt_s1: Vec<Vec<f64>> = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    (0..d)
                        .map(|k| v1[i][k] * l1[k].max(0.0).sqrt() * v1[j][k])
                        .sum()
                })
                .collect()
        })
        .collect();
    let m = matmul(&matmul(&sqrt_s1, &s2), &sqrt_s1);
    let (lm, _) = symmetric_eigen(m);
    let tr_sqrt: f64 = lm.iter().map(|x| x.max(0.0).sqrt()).sum();
    let diff: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y).powi(2)).sum();
    let tr: f64 = (0..d).map(|i| s1[i][i] + s2[i][i]).sum();
    diff + tr - 2.0 * tr_sqrt
}
