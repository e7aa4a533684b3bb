//! Averaging the weights of several snapshots of one training run (Polyak–Ruppert averaging,
//! as in stochastic weight averaging or the post-hoc EMA of Karras et al. 2024): the mean of
//! the EMA exports taken at a run's checkpoints is an average over a longer window than the
//! EMA's own half-life, which smooths out the noise a constant learning rate leaves in the
//! weights once training has levelled off. (On the `mnist` runs it did not help: the runs keep
//! moving at a constant rate, and the mean of far-apart snapshots scored lower than the newest
//! one; `weights/README.md`, session 31.)

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::weights::{self, ModelManifest, StorageDtype};

/// One input of [`average`]: where it came from (for messages) and its bytes.
pub struct Snapshot {
    /// Path or name shown in errors.
    pub name: PathBuf,
    /// Weights-file bytes.
    pub bytes: Vec<u8>,
}

/// Read weights files from disk as [`Snapshot`]s.
pub fn read_snapshots(paths: &[PathBuf]) -> Result<Vec<Snapshot>, String> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|bytes| Snapshot {
                    name: p.clone(),
                    bytes,
                })
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .collect()
}

/// The element-wise mean of the parameters of two or more weights files of the same model
/// (same U-Net config, schedule, dataset and classes), as weights-file bytes. The manifest is
/// the newest snapshot's (most steps), with its notes saying what was averaged.
pub fn average(
    snapshots: &[Snapshot],
    dtype: StorageDtype,
) -> Result<(Vec<u8>, ModelManifest), String> {
    if snapshots.len() < 2 {
        return Err(format!(
            "averaging needs at least two weights files, got {}",
            snapshots.len()
        ));
    }
    let device = Device::flex();
    let mut sums: Vec<(String, Vec<usize>, Vec<f64>)> = Vec::new();
    let mut manifests: Vec<(ModelManifest, &Path)> = Vec::new();
    for snap in snapshots {
        let name = snap.name.as_path();
        let loaded = weights::load_from_bytes(&snap.bytes, &device)
            .map_err(|e| format!("{}: {e}", name.display()))?;
        if let Some((first, first_name)) = manifests.first() {
            same_model(first, &loaded.manifest).map_err(|what| {
                format!(
                    "{} and {} are not the same model: {what}",
                    first_name.display(),
                    name.display()
                )
            })?;
        }
        let values = weights::parameter_values(&loaded.unet);
        if sums.is_empty() {
            sums = values
                .into_iter()
                .map(|(n, s, v)| (n, s, v.into_iter().map(f64::from).collect()))
                .collect();
        } else {
            // Same config, so the same parameters in the same visiting order.
            for ((_, _, sum), (_, _, v)) in sums.iter_mut().zip(values) {
                for (a, b) in sum.iter_mut().zip(v) {
                    *a += f64::from(b);
                }
            }
        }
        manifests.push((loaded.manifest, name));
    }
    let n = snapshots.len() as f64;
    let mean: Vec<(String, Vec<usize>, Vec<f32>)> = sums
        .into_iter()
        .map(|(name, shape, sum)| (name, shape, sum.iter().map(|s| (s / n) as f32).collect()))
        .collect();

    let steps: Vec<u64> = manifests.iter().map(|(m, _)| m.training.steps).collect();
    let newest = manifests
        .iter()
        .max_by_key(|(m, _)| m.training.steps)
        .map(|(m, _)| m.clone())
        .ok_or("no snapshots")?;
    let list = steps
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let note = format!(
        "mean of the weights of {} exports of one run, at steps {list}",
        snapshots.len()
    );
    let notes = if newest.training.notes.is_empty() {
        note
    } else {
        format!("{note}; {}", newest.training.notes)
    };
    let manifest = newest.clone().with_training(
        newest
            .training
            .clone()
            .with_notes(notes)
            .with_date(super::checkpoint::now_iso8601()),
    );
    let bytes = weights::encode(&mean, &manifest, dtype).map_err(|e| e.to_string())?;
    Ok((bytes, manifest))
}

/// Why two manifests do not describe the same model, if they do not.
fn same_model(a: &ModelManifest, b: &ModelManifest) -> Result<(), String> {
    if a.model != b.model {
        return Err("their U-Net configs differ".into());
    }
    if a.schedule != b.schedule {
        return Err("their noise schedules differ".into());
    }
    if a.dataset != b.dataset {
        return Err(format!(
            "one was trained on {}, the other on {}",
            a.dataset, b.dataset
        ));
    }
    if a.class_names != b.class_names {
        return Err("their class names differ".into());
    }
    Ok(())
}
