//! Sampler options (what a user picks on the page or the command line).

use burn::config::Config;

/// Which reverse process to run.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum SamplerKind {
    /// Ancestral sampling, Algorithm 2 of Ho et al. (respaced when steps < T).
    Ddpm,
    /// DDIM (Song et al. 2021) on an evenly spaced sub-sequence of timesteps.
    Ddim,
}

/// The reverse-process variance σ_t² of DDPM sampling.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Variance {
    /// σ_t² = β̃_t, the posterior variance (the lower bound on the reverse variance).
    FixedSmall,
    /// σ_t² = β_t (the upper bound; the paper's choice for CIFAR-10).
    FixedLarge,
}

/// Everything that determines a sampling run besides the model.
#[derive(Config, Debug, PartialEq)]
pub struct SamplerConfig {
    /// DDPM or DDIM.
    #[config(default = "SamplerKind::Ddpm")]
    pub kind: SamplerKind,
    /// Number of network evaluations (≤ T). DDPM with steps < T uses the respaced process.
    #[config(default = 1000)]
    pub steps: usize,
    /// DDIM η (0 = deterministic, 1 ≈ DDPM with σ² = β̃).
    #[config(default = 0.0)]
    pub eta: f64,
    /// DDPM variance choice.
    #[config(default = "Variance::FixedLarge")]
    pub variance: Variance,
    /// Clip x̂₀ to [−1, 1] and step with the posterior mean μ̃_t(x_t, x̂₀).
    #[config(default = true)]
    pub clip_x0: bool,
    /// Seed of the noise (x_T and every z).
    #[config(default = 0)]
    pub seed: u64,
    /// Number of images.
    #[config(default = 16)]
    pub count: usize,
    /// Class to sample (models trained with labels); `None` samples unconditionally.
    #[config(default = "None")]
    pub class: Option<usize>,
    /// Classifier-free guidance scale w: ε = (1+w)·ε(x,t,c) − w·ε(x,t,∅).
    #[config(default = 0.0)]
    pub guidance: f64,
}

impl SamplerConfig {
    /// Parse options given as a JSON object in which any field may be missing (it takes its
    /// default). Unknown fields and wrong types are errors naming the field.
    pub fn from_json_partial(json: &str) -> Result<Self, String> {
        let given: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("options are not valid JSON: {e}"))?;
        let serde_json::Value::Object(given) = given else {
            return Err("options must be a JSON object".into());
        };
        let mut merged = serde_json::to_value(Self::new()).map_err(|e| e.to_string())?;
        let fields = merged
            .as_object_mut()
            .ok_or("sampler defaults are not an object")?;
        for (key, value) in given {
            if !fields.contains_key(&key) {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown option \"{key}\" (known: {})",
                    known.join(", ")
                ));
            }
            fields.insert(key, value);
        }
        serde_json::from_value(merged).map_err(|e| format!("bad option: {e}"))
    }
}
