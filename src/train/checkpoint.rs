//! Checkpoints: model + EMA + optimizer state + step + RNG state, written atomically.
//!
//! Layout: `RUN/checkpoint/{model,ema,optim}.safetensors` and `state.json`. A new checkpoint is
//! written to `checkpoint.tmp/` (every file fsynced), then swapped in by renames; a kill at any
//! moment leaves either the old or the new checkpoint complete (`checkpoint.old/` is used if
//! the kill fell between the two renames).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::TrainConfig;
use super::data::BatcherState;

/// Everything in a checkpoint besides tensors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Training configuration.
    pub config: TrainConfig,
    /// Optimizer steps done.
    pub step: u64,
    /// Data order position.
    pub batcher: BatcherState,
    /// Trainer RNG (timesteps, noise, label dropout).
    pub rng: ([u64; 4], Option<f64>),
    /// Adam's update count.
    pub adam_t: u64,
    /// Smoothed loss.
    pub loss_ema: f64,
    /// Training wall-clock so far.
    pub seconds: f64,
    /// Where it was trained.
    pub device: String,
}

/// The tensors and state of a checkpoint, as bytes/values.
pub struct CheckpointFiles {
    /// Raw model weights file (weights format, f32).
    pub model: Vec<u8>,
    /// EMA weights file (weights format, f32).
    pub ema: Vec<u8>,
    /// Optimizer moments (plain safetensors).
    pub optim: Vec<u8>,
    /// The state.
    pub state: TrainState,
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f =
        fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The checkpoint folder of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Write a checkpoint atomically.
pub fn save(run: &Path, files: &CheckpointFiles) -> Result<(), String> {
    let tmp = run.join("checkpoint.tmp");
    let cur = dir(run);
    let old = run.join("checkpoint.old");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    write_synced(&tmp.join("model.safetensors"), &files.model)?;
    write_synced(&tmp.join("ema.safetensors"), &files.ema)?;
    write_synced(&tmp.join("optim.safetensors"), &files.optim)?;
    let json = serde_json::to_vec_pretty(&files.state).map_err(|e| e.to_string())?;
    write_synced(&tmp.join("state.json"), &json)?;
    let _ = fs::remove_dir_all(&old);
    if cur.exists() {
        fs::rename(&cur, &old).map_err(|e| format!("cannot rotate checkpoint: {e}"))?;
    }
    fs::rename(&tmp, &cur).map_err(|e| format!("cannot install checkpoint: {e}"))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Read the newest complete checkpoint of a run.
pub fn load(run: &Path) -> Result<CheckpointFiles, String> {
    let cur = dir(run);
    let folder = if cur.join("state.json").exists() {
        cur
    } else if run.join("checkpoint.old/state.json").exists() {
        run.join("checkpoint.old")
    } else {
        return Err(format!(
            "no checkpoint in {} (expected {}/state.json)",
            run.display(),
            cur.display()
        ));
    };
    let read = |name: &str| {
        let p = folder.join(name);
        fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let state: TrainState = serde_json::from_slice(&read("state.json")?).map_err(|e| {
        format!(
            "{}: corrupt checkpoint state ({e})",
            folder.join("state.json").display()
        )
    })?;
    Ok(CheckpointFiles {
        model: read("model.safetensors")?,
        ema: read("ema.safetensors")?,
        optim: read("optim.safetensors")?,
        state,
    })
}

/// Encode named f32 tensors as a plain safetensors file.
pub fn encode_plain(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>, String> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

/// Decode a plain f32 safetensors file into (name, values).
pub fn decode_plain(bytes: &[u8], what: &str) -> Result<Vec<(String, Vec<f32>)>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("{what}: corrupt ({e})"))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(format!("{what}: tensor {name} is not f32"));
        }
        let v = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, v));
    }
    Ok(out)
}

/// Today's date and time (UTC) as ISO 8601, from the system clock.
pub fn now_iso8601() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
