//! Adam with global-norm gradient clipping and learning-rate warm-up, and the EMA of weights.
//!
//! Written out here rather than taken from burn-optim so that (a) clipping is by the *global*
//! norm over all parameters, as in the paper's TensorFlow code, (b) the optimizer state is keyed
//! by parameter path and saved in a plain safetensors file with the checkpoint, and (c) the
//! update runs on all parameters at once: they are laid end to end in one flat vector
//! ([`ParamLayout`]), so Adam, the EMA and the gradient norm are a handful of tensor operations
//! per step rather than a handful per parameter. On a GPU every operation costs a dispatch on
//! the host, and per-parameter updates (~150 tensors × ~20 operations) outnumbered the
//! U-Net's own forward and backward operations several times over.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

/// One parameter's place in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Module path, e.g. `down.0.res.conv1.weight`.
    pub path: String,
    /// The parameter's shape.
    pub shape: Vec<usize>,
    /// First element in the flat vector.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// Where every float parameter of a module sits in one flat vector (the module's visit order).
/// Two modules of the same config have the same layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLayout {
    /// The parameters in visit order.
    pub slots: Vec<Slot>,
    /// Elements in all.
    pub total: usize,
}

impl ParamLayout {
    /// The layout of `module`'s float parameters.
    pub fn of<M: Module>(module: &M) -> Self {
        let mut total = 0;
        let slots = crate::weights::parameter_shapes(module)
            .into_iter()
            .map(|(path, shape)| {
                let len: usize = shape.iter().product();
                let slot = Slot {
                    path,
                    shape,
                    offset: total,
                    len,
                };
                total += len;
                slot
            })
            .collect();
        Self { slots, total }
    }
}

/// Collects parameter values, or their gradients, flattened, in visit order.
struct Gather<'a> {
    grads: Option<&'a GradientsParams>,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n: usize = value.dims().iter().product();
        let part = match self.grads {
            None => value.inner(),
            // A parameter the loss does not reach gets a zero gradient.
            Some(grads) => match grads.get::<D>(param.id) {
                Some(g) => g.inner(),
                None => value.inner().zeros_like(),
            },
        };
        self.parts.push(part.reshape([n]));
    }
}

fn gather<M: Module>(module: &M, grads: Option<&GradientsParams>) -> Tensor<1> {
    let mut g = Gather {
        grads,
        parts: Vec::new(),
    };
    module.visit(&mut g);
    Tensor::cat(g.parts, 0)
}

/// Every parameter of `module` in one flat vector (layout order), without autodiff.
pub fn flatten<M: Module>(module: &M) -> Tensor<1> {
    gather(module, None)
}

/// Every parameter's gradient in one flat vector (layout order; zeros where there is none).
pub fn flatten_grads<M: Module>(module: &M, grads: &GradientsParams) -> Tensor<1> {
    gather(module, Some(grads))
}

struct Scatter<'a> {
    flat: &'a Tensor<1>,
    slots: &'a [Slot],
    next: usize,
}

impl ModuleMapper for Scatter<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(slot) = self.slots.get(self.next) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        self.next += 1;
        let shape: [usize; D] = match slot.shape.as_slice().try_into() {
            Ok(s) => s,
            Err(_) => return Param::from_mapped_value(id, tensor, mapper),
        };
        let mut value = self
            .flat
            .clone()
            .slice(slot.offset..slot.offset + slot.len)
            .reshape(shape);
        if tensor.is_autodiff() {
            value = value.autodiff();
        }
        if tensor.is_require_grad() {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Replace every parameter of `module` with its piece of `flat` (layout order); parameter ids,
/// autodiff and require-grad are kept. `flat` must hold `ParamLayout::of(&module).total`
/// elements.
pub fn unflatten<M: Module>(module: M, flat: &Tensor<1>) -> M {
    let layout = ParamLayout::of(&module);
    debug_assert_eq!(flat.dims()[0], layout.total);
    module.map(&mut Scatter {
        flat,
        slots: &layout.slots,
        next: 0,
    })
}

/// A tensor saved by name: (name, shape, values).
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

/// Adam's moments for all parameters (flat, in [`ParamLayout`] order) and the step count.
#[derive(Default)]
pub struct AdamState {
    /// First moments (`None` before the first update).
    pub m: Option<Tensor<1>>,
    /// Second moments.
    pub v: Option<Tensor<1>>,
    /// Number of updates applied.
    pub t: u64,
}

impl AdamState {
    /// Per parameter (name, shape, values) for saving: `m.<path>` and `v.<path>`.
    pub fn to_named(&self, layout: &ParamLayout) -> Result<Vec<NamedValues>, String> {
        let mut out = Vec::new();
        for (prefix, moment) in [("m", &self.m), ("v", &self.v)] {
            let Some(moment) = moment else { continue };
            let values = moment
                .clone()
                .try_into_data()
                .map_err(|e| format!("device error while reading the optimizer state: {e:?}"))?
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("unexpected optimizer state: {e:?}"))?;
            if values.len() != layout.total {
                return Err(format!(
                    "optimizer state has {} values for {} parameters",
                    values.len(),
                    layout.total
                ));
            }
            for s in &layout.slots {
                let piece = values[s.offset..s.offset + s.len].to_vec();
                out.push((format!("{prefix}.{}", s.path), vec![s.len], piece));
            }
        }
        Ok(out)
    }

    /// Rebuild from tensors saved by [`AdamState::to_named`] for a model with `layout`. A state
    /// with no moments at all (saved before the first update) is empty; one that lacks some
    /// parameter or has the wrong size for it is an error that names it.
    pub fn from_named(
        named: Vec<(String, Vec<f32>)>,
        t: u64,
        layout: &ParamLayout,
        device: &Device,
    ) -> Result<Self, String> {
        let mut map: HashMap<String, Vec<f32>> = named.into_iter().collect();
        let mut state = Self {
            t,
            ..Self::default()
        };
        if map.is_empty() {
            return Ok(state);
        }
        for prefix in ["m", "v"] {
            let mut flat = Vec::with_capacity(layout.total);
            for s in &layout.slots {
                let key = format!("{prefix}.{}", s.path);
                let values = map.remove(&key).ok_or_else(|| {
                    format!("optimizer state has no {key}: it belongs to another model")
                })?;
                if values.len() != s.len {
                    return Err(format!(
                        "optimizer state {key} has {} values, the model's parameter {}",
                        values.len(),
                        s.len
                    ));
                }
                flat.extend(values);
            }
            let tensor = Tensor::<1>::from_data(TensorData::new(flat, [layout.total]), device);
            match prefix {
                "m" => state.m = Some(tensor),
                _ => state.v = Some(tensor),
            }
        }
        Ok(state)
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

/// ‖g‖ of a flat gradient, left on the device (`g` stays alive: see [`mse_loss`]).
pub fn norm(g: &Tensor<1>) -> Tensor<1> {
    g.clone().square().sum().sqrt()
}

/// √(Σ‖g‖²) over all parameters, left on the device.
pub fn global_grad_norm_tensor<M: Module>(model: &M, grads: &GradientsParams) -> Tensor<1> {
    norm(&flatten_grads(model, grads))
}

/// √(Σ‖g‖²) over all parameters (one read-back).
pub fn global_grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    global_grad_norm_tensor(model, grads).into_scalar::<f32>() as f64
}

/// The global-norm clipping multiplier min(1, max_norm / (‖g‖ + 10⁻⁶)) of a flat gradient,
/// computed on the device so that a training step needs no read-back (`None` when clipping is
/// off).
pub fn clip_scale(g: &Tensor<1>, max_norm: f64) -> Option<Tensor<1>> {
    (max_norm > 0.0).then(|| {
        norm(g)
            .add_scalar(1e-6)
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
    /// Multiplier applied to every gradient.
    pub grad_scale: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

/// One Adam update of the flat weights `w` with the flat gradient `g`, the latter also
/// multiplied by `scale` (a one-element tensor on the device: the clipping multiplier) when
/// given. Returns the new weights.
pub fn adam_step(
    w: Tensor<1>,
    g: Tensor<1>,
    state: &mut AdamState,
    step: AdamStep,
    scale: Option<Tensor<1>>,
) -> Tensor<1> {
    state.t += 1;
    let mut g = g.mul_scalar(step.grad_scale);
    if let Some(scale) = scale {
        g = g * scale;
    }
    let m = match state.m.take() {
        Some(m) => m.mul_scalar(step.beta1) + g.clone().mul_scalar(1.0 - step.beta1),
        None => g.clone().mul_scalar(1.0 - step.beta1),
    };
    let v = match state.v.take() {
        Some(v) => v.mul_scalar(step.beta2) + g.square().mul_scalar(1.0 - step.beta2),
        None => g.square().mul_scalar(1.0 - step.beta2),
    };
    let t = state.t as i32;
    let m_hat = m.clone().mul_scalar(1.0 / (1.0 - step.beta1.powi(t)));
    let v_hat = v.clone().mul_scalar(1.0 / (1.0 - step.beta2.powi(t)));
    let update = m_hat
        .div(v_hat.sqrt().add_scalar(step.eps))
        .mul_scalar(step.lr);
    state.m = Some(m);
    state.v = Some(v);
    w - update
}

/// Apply one Adam update to `model` with its gradients (flattens, steps, writes back).
pub fn adam_update<M: Module>(
    model: M,
    grads: &GradientsParams,
    state: &mut AdamState,
    step: AdamStep,
) -> M {
    let w = flatten(&model);
    let g = flatten_grads(&model, grads);
    let w = adam_step(w, g, state, step, None);
    unflatten(model, &w)
}

/// ema ← decay·ema + (1 − decay)·w, on flat vectors.
pub fn ema_step(ema: Tensor<1>, w: &Tensor<1>, decay: f64) -> Tensor<1> {
    ema.mul_scalar(decay) + w.clone().mul_scalar(1.0 - decay)
}
