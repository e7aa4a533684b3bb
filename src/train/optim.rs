//! Adam with global-norm gradient clipping and learning-rate warm-up, and the EMA of weights.
//!
//! Written out here rather than taken from burn-optim so that (a) clipping is by the *global*
//! norm over all parameters, as in the paper's TensorFlow code, and (b) the optimizer state is
//! keyed by parameter path and saved in a plain safetensors file with the checkpoint.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

/// Adam's moments for every parameter (flattened, keyed by module path) and the step count.
#[derive(Default)]
pub struct AdamState {
    /// First moments.
    pub m: HashMap<String, Tensor<1>>,
    /// Second moments.
    pub v: HashMap<String, Tensor<1>>,
    /// Number of updates applied.
    pub t: u64,
}

impl AdamState {
    /// Flatten to (name, shape, values) for saving: `m.<path>` and `v.<path>`.
    pub fn to_named(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (prefix, map) in [("m", &self.m), ("v", &self.v)] {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let values = map[k]
                    .clone()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap_or_default();
                out.push((format!("{prefix}.{k}"), vec![values.len()], values));
            }
        }
        out
    }

    /// Rebuild from tensors saved by [`AdamState::to_named`].
    pub fn from_named(named: Vec<(String, Vec<f32>)>, t: u64, device: &Device) -> Self {
        let mut state = Self {
            t,
            ..Self::default()
        };
        for (name, values) in named {
            let n = values.len();
            let tensor = Tensor::<1>::from_data(TensorData::new(values, [n]), device);
            if let Some(k) = name.strip_prefix("m.") {
                state.m.insert(k.to_string(), tensor);
            } else if let Some(k) = name.strip_prefix("v.") {
                state.v.insert(k.to_string(), tensor);
            }
        }
        state
    }
}

/// L_simple of Algorithm 1: mean ‖ε − ε_θ‖² over every element.
///
/// Takes references and works on clones on purpose: with Burn 0.22.1's `fusion` on wgpu, an
/// elementwise chain ending in a full reduction over tensors *moved* into it (their buffers
/// marked reusable) returned wrong values (1.3·10⁶ for a loss of 0.92) and training diverged.
/// The caller keeps `pred` and `target` alive until the loss has been read, which avoids that
/// path; `tests/gpu_parity.rs` compares GPU and CPU training steps. (Related upstream reports:
/// tracel-ai/burn#5079 and #5257, fusion + autotune giving wrong results on Vulkan.)
pub fn mse_loss<const D: usize>(pred: &Tensor<D>, target: &Tensor<D>) -> Tensor<1> {
    (pred.clone() - target.clone()).square().mean()
}

struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(s) => s + sq,
                None => sq,
            });
        }
    }
}

/// √(Σ‖g‖²) over all parameters, left on the device (`None` when nothing has a gradient).
pub fn global_grad_norm_tensor<M: Module>(model: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut v = GradNorm { grads, sum: None };
    model.visit(&mut v);
    v.sum.map(|s| s.sqrt())
}

/// √(Σ‖g‖²) over all parameters (one read-back).
pub fn global_grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    global_grad_norm_tensor(model, grads)
        .map(|n| n.into_scalar::<f32>() as f64)
        .unwrap_or(0.0)
}

/// The global-norm clipping multiplier min(1, max_norm / (‖g‖ + 10⁻⁶)), computed on the device
/// so that a training step needs no read-back (`None` when clipping is off).
pub fn clip_scale<M: Module>(
    model: &M,
    grads: &GradientsParams,
    max_norm: f64,
) -> Option<Tensor<1>> {
    if max_norm <= 0.0 {
        return None;
    }
    global_grad_norm_tensor(model, grads).map(|n| {
        n.add_scalar(1e-6)
            .recip()
            .mul_scalar(max_norm)
            .clamp_max(1.0)
    })
}

/// Adam hyper-parameters for one update.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Learning rate of this step (after warm-up).
    pub lr: f64,
    /// Multiplier applied to every gradient (global-norm clipping).
    pub grad_scale: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

struct AdamMapper<'a> {
    path: Vec<String>,
    grads: &'a mut GradientsParams,
    state: &'a mut AdamState,
    step: AdamStep,
    /// Multiplier held on the device (clipping), applied on top of `step.grad_scale`.
    scale: Option<Tensor<1>>,
}

impl ModuleMapper for AdamMapper<'_> {
    fn enter_module(&mut self, name: &str, _c: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _c: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let key = self.path.join(".");
        let shape = tensor.dims();
        let n: usize = shape.iter().product();
        let w = tensor.inner().reshape([n]);
        let mut g = grad.inner().reshape([n]).mul_scalar(self.step.grad_scale);
        if let Some(scale) = &self.scale {
            g = g * scale.clone();
        }
        let s = self.step;
        let m = match self.state.m.remove(&key) {
            Some(m) => m.mul_scalar(s.beta1) + g.clone().mul_scalar(1.0 - s.beta1),
            None => g.clone().mul_scalar(1.0 - s.beta1),
        };
        let v = match self.state.v.remove(&key) {
            Some(v) => v.mul_scalar(s.beta2) + g.square().mul_scalar(1.0 - s.beta2),
            None => g.square().mul_scalar(1.0 - s.beta2),
        };
        let t = self.state.t as i32;
        let m_hat = m.clone().mul_scalar(1.0 / (1.0 - s.beta1.powi(t)));
        let v_hat = v.clone().mul_scalar(1.0 / (1.0 - s.beta2.powi(t)));
        let update = m_hat.div(v_hat.sqrt().add_scalar(s.eps)).mul_scalar(s.lr);
        let new = (w - update).reshape(shape);
        self.state.m.insert(key.clone(), m);
        self.state.v.insert(key, v);
        let mut new = Tensor::from_inner(new);
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Apply one Adam update to `model` with its gradients.
pub fn adam_update<M: Module>(
    model: M,
    grads: &mut GradientsParams,
    state: &mut AdamState,
    step: AdamStep,
) -> M {
    adam_update_scaled(model, grads, state, step, None)
}

/// [`adam_update`] with the gradients also multiplied by `scale`, a one-element tensor on the
/// device (the multiplier of [`clip_scale`]).
pub fn adam_update_scaled<M: Module>(
    model: M,
    grads: &mut GradientsParams,
    state: &mut AdamState,
    step: AdamStep,
    scale: Option<Tensor<1>>,
) -> M {
    state.t += 1;
    model.map(&mut AdamMapper {
        path: Vec::new(),
        grads,
        state,
        step,
        scale,
    })
}

struct Collect {
    path: Vec<String>,
    out: HashMap<String, Tensor<1>>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _c: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _c: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n: usize = t.dims().iter().product();
        self.out.insert(self.path.join("."), t.reshape([n]));
    }
}

struct EmaMapper {
    path: Vec<String>,
    current: HashMap<String, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaMapper {
    fn enter_module(&mut self, name: &str, _c: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _c: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let Some(cur) = self.current.remove(&key) else {
            return param;
        };
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.dims();
            ema.mul_scalar(decay) + cur.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

/// ema ← decay·ema + (1 − decay)·model, parameter by parameter (matched by path).
pub fn ema_update<M: Module, E: Module>(ema: E, model: &M, decay: f64) -> E {
    let mut c = Collect {
        path: Vec::new(),
        out: HashMap::new(),
    };
    model.visit(&mut c);
    ema.map(&mut EmaMapper {
        path: Vec::new(),
        current: c.out,
        decay,
    })
}
