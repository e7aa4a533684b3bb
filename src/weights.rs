//! The weights file: one self-describing safetensors file per model.
//!
//! Layout: standard safetensors (readable by any safetensors tool). The header's `__metadata__`
//! holds `format = "ddpm-web"`, `format_version = "1"` and `manifest` (JSON of
//! [`ModelManifest`]: U-Net config, schedule, dataset, class names, training facts). Tensors are
//! named by their module path (e.g. `down.0.stages.1.res.conv1.weight`) and stored as f32 or
//! f16; loading always yields f32 parameters.

use std::collections::{BTreeMap, HashMap};

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::{UNet, UNetConfig};
use crate::schedule::{Schedule, ScheduleConfig};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "ddpm-web";
/// The file-format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Facts about how the weights were trained.
#[derive(Config, Debug, PartialEq)]
pub struct TrainingInfo {
    /// Optimizer steps taken.
    #[config(default = 0)]
    pub steps: u64,
    /// EMA decay of the exported weights (`None`: raw weights).
    #[config(default = "None")]
    pub ema_decay: Option<f64>,
    /// When the weights were written (ISO 8601, UTC).
    #[config(default = "String::new()")]
    pub date: String,
    /// Where they were trained (adapter name or "cpu").
    #[config(default = "String::new()")]
    pub device: String,
    /// Wall-clock training time.
    #[config(default = "None")]
    pub seconds: Option<f64>,
    /// Free-form notes (e.g. "random init, for tests").
    #[config(default = "String::new()")]
    pub notes: String,
}

/// Everything about a model that is not a tensor.
#[derive(Config, Debug, PartialEq)]
pub struct ModelManifest {
    /// The U-Net's configuration (also the image shape and channels).
    pub model: UNetConfig,
    /// The forward-process schedule the model was trained with.
    pub schedule: ScheduleConfig,
    /// Dataset name, e.g. "mnist".
    #[config(default = "String::from(\"unknown\")")]
    pub dataset: String,
    /// Human-readable class names, index = label (empty for unconditional models).
    #[config(default = "Vec::new()")]
    pub class_names: Vec<String>,
    /// Training facts.
    #[config(default = "TrainingInfo::new()")]
    pub training: TrainingInfo,
}

/// Storage precision of the tensors in a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (half the size; computation still runs in f32).
    F16,
}

/// What can be wrong with a weights file. Every variant names the problem in words.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Not a safetensors file at all, or cut short.
    #[error("not a readable weights file ({0}); is it truncated or corrupt?")]
    Corrupt(String),
    /// A safetensors file, but not one of ours.
    #[error("not a ddpm-web weights file: {0}")]
    WrongKind(String),
    /// Written by a newer/older, incompatible format version.
    #[error(
        "unsupported ddpm-web format version {found} (this build reads version {FORMAT_VERSION})"
    )]
    Version {
        /// The version in the file.
        found: String,
    },
    /// The manifest is missing fields or describes an impossible model.
    #[error("bad manifest: {0}")]
    Manifest(String),
    /// The tensors do not match the model the manifest describes.
    #[error("weights do not match the model in the manifest: {0}")]
    Mismatch(String),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(String),
}

/// A tensor as listed in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Module path.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Storage type ("F32", "F16", …).
    pub dtype: String,
}

/// The header of a weights file, read without touching tensor data.
#[derive(Debug, Clone)]
pub struct FileSummary {
    /// The manifest.
    pub manifest: ModelManifest,
    /// Every tensor, sorted by name.
    pub tensors: Vec<TensorEntry>,
    /// Total parameter count.
    pub parameters: usize,
    /// File size in bytes.
    pub bytes: usize,
}

/// A model ready to sample from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The manifest it came with.
    pub manifest: ModelManifest,
    /// The schedule tables.
    pub schedule: Schedule,
    /// The network, on the requested device.
    pub unet: UNet,
}

impl LoadedModel {
    /// [channels, height, width] of the images the model makes.
    pub fn image_shape(&self) -> [usize; 3] {
        let m = &self.manifest.model;
        [m.image_channels, m.image_size, m.image_size]
    }
}

/// Collects (path, shape) of every float parameter without initialising lazy ones, and
/// optionally the f32 values (needs a synchronous read: native or CPU backends).
struct Collector {
    path: Vec<String>,
    read_values: bool,
    out: Vec<(String, Vec<usize>, Option<Vec<f32>>)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape().to_vec();
        let values = self.read_values.then(|| {
            param
                .val()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_default()
        });
        self.out.push((self.path.join("."), shape, values));
    }
}

/// Replaces every float parameter with the tensor of the same path.
struct Loader {
    path: Vec<String>,
    tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    device: Device,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // Presence and shape were validated before mapping; a miss leaves the parameter as is.
        match self.tensors.remove(&self.path.join(".")) {
            Some((values, shape)) => {
                let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &self.device);
                let id = param.id;
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// The float parameters of a module as (path, shape), in visiting order.
pub fn parameter_shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut c = Collector {
        path: Vec::new(),
        read_values: false,
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out.into_iter().map(|(n, s, _)| (n, s)).collect()
}

/// The float parameters of a module with their values (synchronous read-back).
pub fn parameter_values<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collector {
        path: Vec::new(),
        read_values: true,
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
        .into_iter()
        .map(|(n, s, v)| (n, s, v.unwrap_or_default()))
        .collect()
}

/// Serialise named f32 tensors and a manifest into a weights file.
pub fn encode(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    manifest: &ModelManifest,
    dtype: StorageDtype,
) -> Result<Vec<u8>, WeightsError> {
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes = match dtype {
                StorageDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StorageDtype::F16 => values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StorageDtype::F32 => Dtype::F32,
        StorageDtype::F16 => Dtype::F16,
    };
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| WeightsError::Io(format!("cannot encode tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest_json = serde_json::to_string(manifest)
        .map_err(|e| WeightsError::Io(format!("cannot encode manifest: {e}")))?;
    let metadata = [
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("manifest".to_string(), manifest_json),
    ];
    safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .map_err(|e| WeightsError::Io(format!("cannot encode weights: {e}")))
}

/// Write a U-Net and its manifest as weights-file bytes (reads the parameters back
/// synchronously, so call it natively or on a CPU backend).
pub fn save_to_bytes(
    unet: &UNet,
    manifest: &ModelManifest,
    dtype: StorageDtype,
) -> Result<Vec<u8>, WeightsError> {
    encode(&parameter_values(unet), manifest, dtype)
}

fn parse(bytes: &[u8]) -> Result<(SafeTensors<'_>, ModelManifest), WeightsError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Corrupt(e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Corrupt(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(WeightsError::WrongKind(format!(
                "its format is \"{other}\", expected \"{FORMAT}\""
            )));
        }
        None => {
            return Err(WeightsError::WrongKind(
                "a safetensors file without ddpm-web metadata (no \"format\" key)".into(),
            ));
        }
    }
    let version = meta.get("format_version").cloned().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(WeightsError::Version { found: version });
    }
    let json = meta
        .get("manifest")
        .ok_or_else(|| WeightsError::Manifest("no \"manifest\" entry in the metadata".into()))?;
    let manifest: ModelManifest =
        serde_json::from_str(json).map_err(|e| WeightsError::Manifest(e.to_string()))?;
    manifest
        .model
        .validate()
        .map_err(|e| WeightsError::Manifest(e.to_string()))?;
    Schedule::new(&manifest.schedule).map_err(|e| WeightsError::Manifest(e.to_string()))?;
    if !manifest.class_names.is_empty() && manifest.class_names.len() != manifest.model.num_classes
    {
        return Err(WeightsError::Manifest(format!(
            "{} class names for a model with {} classes",
            manifest.class_names.len(),
            manifest.model.num_classes
        )));
    }
    Ok((st, manifest))
}

/// Read the manifest and tensor list of a weights file (no model is built).
pub fn inspect(bytes: &[u8]) -> Result<FileSummary, WeightsError> {
    let (st, manifest) = parse(bytes)?;
    let mut tensors: Vec<TensorEntry> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| TensorEntry {
            name,
            shape: view.shape().to_vec(),
            dtype: format!("{:?}", view.dtype()),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let parameters = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    Ok(FileSummary {
        manifest,
        tensors,
        parameters,
        bytes: bytes.len(),
    })
}

fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, WeightsError> {
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<_>>(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(WeightsError::Mismatch(format!(
                "tensor {name} is stored as {other:?}; expected F32, F16 or BF16"
            )));
        }
    };
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(WeightsError::Mismatch(format!(
            "tensor {name} holds a non-finite value at index {bad}"
        )));
    }
    Ok(values)
}

/// Replace every float parameter of `module` with the tensor of the same path in `st`,
/// checking that no tensor is missing, extra, misshapen or non-finite.
pub fn load_tensors_into<M: Module>(
    module: M,
    st: &SafeTensors<'_>,
    device: &Device,
) -> Result<M, WeightsError> {
    let expected: BTreeMap<String, Vec<usize>> = parameter_shapes(&module).into_iter().collect();
    let in_file: BTreeMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    if let Some(name) = expected.keys().find(|n| !in_file.contains_key(*n)) {
        let missing = expected
            .keys()
            .filter(|n| !in_file.contains_key(*n))
            .count();
        return Err(WeightsError::Mismatch(format!(
            "tensor {name} is missing ({missing} of {} missing)",
            expected.len()
        )));
    }
    if let Some(name) = in_file.keys().find(|n| !expected.contains_key(*n)) {
        return Err(WeightsError::Mismatch(format!(
            "unexpected tensor {name} (the manifest's model has no such parameter)"
        )));
    }
    let mut tensors = HashMap::with_capacity(expected.len());
    for (name, shape) in &expected {
        let view = &in_file[name];
        if view.shape() != shape.as_slice() {
            return Err(WeightsError::Mismatch(format!(
                "tensor {name} has shape {:?}, the model expects {shape:?}",
                view.shape()
            )));
        }
        tensors.insert(name.clone(), (to_f32(name, view)?, shape.clone()));
    }
    Ok(module.map(&mut Loader {
        path: Vec::new(),
        tensors,
        device: device.clone(),
    }))
}

/// Load a model from weights-file bytes onto `device` (f32 parameters).
pub fn load_from_bytes(bytes: &[u8], device: &Device) -> Result<LoadedModel, WeightsError> {
    let (st, manifest) = parse(bytes)?;
    let schedule =
        Schedule::new(&manifest.schedule).map_err(|e| WeightsError::Manifest(e.to_string()))?;
    let unet = manifest
        .model
        .init(device)
        .map_err(|e| WeightsError::Manifest(e.to_string()))?;

    let unet = load_tensors_into(unet, &st, device)?;
    Ok(LoadedModel {
        manifest,
        schedule,
        unet,
    })
}

/// Load a model from a file on disk.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_from_path(
    path: impl AsRef<std::path::Path>,
    device: &Device,
) -> Result<LoadedModel, WeightsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| WeightsError::Io(format!("cannot read {}: {e}", path.display())))?;
    load_from_bytes(&bytes, device)
}

/// Write weights-file bytes to disk atomically (temp file, fsync, rename): a kill mid-write
/// leaves the previous file intact.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(path: impl AsRef<std::path::Path>, bytes: &[u8]) -> Result<(), WeightsError> {
    use std::io::Write;
    let path = path.as_ref();
    let tmp = path.with_extension("tmp-write");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WeightsError::Io(format!("cannot write {}: {e}", path.display()))
    })
}
