//! Browser shell (wasm32): a wasm-bindgen API over the shared core, driven from a Web Worker
//! by `www/worker.js`. Nothing here panics on bad input: every failure is a JS `Error` with a
//! sentence a person can read.

mod backend;

use std::cell::RefCell;
use std::rc::Rc;

use burn::module::Module;
use burn::tensor::Tensor;
use js_sys::{Object, Promise, Reflect, Uint8ClampedArray};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::image::{Batch, grid_rgba};
use crate::sampler::{Sampler, SamplerConfig};
use crate::weights::{self, LoadedModel};
use backend::Backend;

#[derive(Default)]
struct State {
    backend: Option<Rc<Backend>>,
    model: Option<Rc<LoadedModel>>,
    sampler: Option<Sampler>,
}

/// One sampler instance (one per worker): backend, model, and the run in progress.
#[wasm_bindgen]
pub struct Engine {
    state: Rc<RefCell<State>>,
}

fn err(msg: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&msg.to_string()).into()
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a plain object cannot fail.
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

async fn read_grid(t: Tensor<4>) -> Result<(usize, usize, Vec<u8>), JsValue> {
    let shape = t.dims();
    let data = t
        .into_data_async()
        .await
        .map_err(|e| err(format!("the GPU failed while reading results: {e:?}")))?;
    let values = data
        .try_into_vec_as::<f32>()
        .map_err(|e| err(format!("unexpected tensor data: {e:?}")))?;
    Ok(grid_rgba(Batch {
        data: &values,
        shape,
    }))
}

fn frame(
    index: usize,
    total: usize,
    t: usize,
    x: (usize, usize, Vec<u8>),
    x0: Option<(usize, usize, Vec<u8>)>,
) -> JsValue {
    let obj = Object::new();
    set(&obj, "index", index as u32);
    set(&obj, "total", total as u32);
    set(&obj, "t", t as u32);
    set(&obj, "width", x.0 as u32);
    set(&obj, "height", x.1 as u32);
    set(&obj, "x", Uint8ClampedArray::from(x.2.as_slice()));
    if let Some(x0) = x0 {
        set(&obj, "x0", Uint8ClampedArray::from(x0.2.as_slice()));
    }
    obj.into()
}

#[wasm_bindgen]
impl Engine {
    /// A new engine with no backend yet.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Engine {
        console_error_panic_hook::set_once();
        Engine {
            state: Rc::new(RefCell::new(State::default())),
        }
    }

    /// Pick the backend: "auto" (WebGPU, else CPU), "webgpu" (same) or "cpu". Resolves to
    /// `{kind, adapter, note}`; never rejects — without WebGPU it resolves to the CPU with a note.
    #[wasm_bindgen(js_name = initBackend)]
    pub fn init_backend(&self, prefer: String) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let backend = backend::init(&prefer).await;
            let info = serde_wasm_bindgen_lite(&backend.info)?;
            state.borrow_mut().backend = Some(Rc::new(backend));
            Ok(info)
        })
    }

    /// Load a weights file. Returns the manifest plus `parameters` as a JSON string.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, bytes: &[u8]) -> Result<String, JsValue> {
        let mut state = self.state.borrow_mut();
        let backend = state
            .backend
            .clone()
            .ok_or_else(|| err("no backend: call initBackend first"))?;
        let model = weights::load_from_bytes(bytes, &backend.device).map_err(err)?;
        let parameters = model.unet.num_params();
        let json = serde_json::json!({
            "manifest": model.manifest,
            "parameters": parameters,
            "bytes": bytes.len(),
        });
        state.sampler = None;
        state.model = Some(Rc::new(model));
        Ok(json.to_string())
    }

    /// Start a run. `options` is a JSON [`SamplerConfig`] (missing fields take their defaults).
    /// Returns `{total, width, height}` as JSON.
    pub fn start(&self, options: &str) -> Result<String, JsValue> {
        let mut state = self.state.borrow_mut();
        let model = state.model.clone().ok_or_else(|| err("no model loaded"))?;
        let backend = state.backend.clone().ok_or_else(|| err("no backend"))?;
        if backend.is_lost() {
            return Err(err("the GPU device was lost"));
        }
        let config = SamplerConfig::from_json_partial(options).map_err(err)?;
        let sampler = Sampler::new(
            &model.schedule,
            &config,
            model.image_shape(),
            model.manifest.model.num_classes,
            &backend.device,
        )
        .map_err(err)?;
        let [c, h, w] = model.image_shape();
        let (gw, gh) = crate::image::grid_size([config.count, c, h, w]);
        let total = sampler.total();
        state.sampler = Some(sampler);
        Ok(serde_json::json!({ "total": total, "width": gw, "height": gh }).to_string())
    }

    /// Resolve to the frame of the current x (x_T right after `start`).
    #[wasm_bindgen(js_name = currentFrame)]
    pub fn current_frame(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (x, done, total) = {
                let st = state.borrow();
                let s = st
                    .sampler
                    .as_ref()
                    .ok_or_else(|| err("no run in progress"))?;
                (s.x().clone(), s.done(), s.total())
            };
            let grid = read_grid(x).await?;
            Ok(frame(done, total, 0, grid, None))
        })
    }

    /// Run one step. Resolves to `{index, total, t, width, height, x, x0}` (RGBA grids), or
    /// `null` once the run is finished.
    pub fn step(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let step = {
                let mut st = state.borrow_mut();
                let backend = st.backend.clone().ok_or_else(|| err("no backend"))?;
                if backend.is_lost() {
                    return Err(err("the GPU device was lost"));
                }
                let model = st.model.clone().ok_or_else(|| err("no model loaded"))?;
                let sampler = st
                    .sampler
                    .as_mut()
                    .ok_or_else(|| err("no run in progress"))?;
                match sampler.step(&model.unet) {
                    Some(step) => step,
                    None => return Ok(JsValue::NULL),
                }
            };
            let x = read_grid(step.x).await?;
            let x0 = read_grid(step.x0).await?;
            Ok(frame(step.index, step.total, step.t, x, Some(x0)))
        })
    }

    /// Abandon the run in progress (the next `step` rejects until `start` is called again).
    pub fn stop(&self) {
        self.state.borrow_mut().sampler = None;
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Serialize to a JS object via JSON (keeps the dependency list short).
fn serde_wasm_bindgen_lite<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(value).map_err(err)?;
    js_sys::JSON::parse(&json)
}
