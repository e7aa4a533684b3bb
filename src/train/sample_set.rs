//! Generated samples kept for scoring later (`ddpm eval --save-samples` / `--load-samples`), so
//! a long evaluation (1000 samples × 1000 DDPM steps on a CPU) can run in pieces — in parallel
//! processes or across sessions — and a killed piece loses only itself.
//!
//! Format: safetensors with `samples` [N, C, H, W] f32 in [−1, 1] and `classes` [N] i64 (the
//! class each sample was drawn for, −1 = unconditional); metadata `format = "ddpm-web-samples"`
//! and `settings`, a JSON object (dataset, sampler, steps, guidance, seed, weights).

use std::path::Path;

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

const FORMAT: &str = "ddpm-web-samples";

/// Generated images with the class each was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSet {
    /// NCHW values in [−1, 1].
    pub images: Vec<f32>,
    /// [C, H, W] of one image.
    pub shape: [usize; 3],
    /// The class each sample was drawn for (`None` = unconditional).
    pub wanted: Vec<Option<usize>>,
    /// How they were made; sets scored together must agree on everything but `seed`.
    pub settings: serde_json::Value,
}

impl SampleSet {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.wanted.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Append another set made the same way (same image shape and settings apart from the seed).
    pub fn extend(&mut self, other: SampleSet) -> Result<(), String> {
        if other.shape != self.shape {
            return Err(format!(
                "sample sets differ in image shape: {:?} vs {:?}",
                self.shape, other.shape
            ));
        }
        // Where both sets know the weights' checksum, it (not the file's path) says whether
        // they came from the same model; otherwise (sets saved before the checksum was
        // recorded) the path does.
        let by_content = [&self.settings, &other.settings]
            .iter()
            .all(|v| v.get("weights_crc32").is_some());
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("seed");
                o.remove(if by_content {
                    "weights"
                } else {
                    "weights_crc32"
                });
            }
            v
        };
        if strip(&self.settings) != strip(&other.settings) {
            return Err(format!(
                "sample sets were made differently: {} vs {}",
                self.settings, other.settings
            ));
        }
        self.images.extend(other.images);
        self.wanted.extend(other.wanted);
        Ok(())
    }
}

/// Encode a sample set as safetensors bytes.
pub fn encode(set: &SampleSet) -> Result<Vec<u8>, String> {
    let [c, h, w] = set.shape;
    let n = set.len();
    if set.images.len() != n * c * h * w {
        return Err(format!(
            "{} values do not make {n} images of {c}×{h}×{w}",
            set.images.len()
        ));
    }
    let images: Vec<u8> = set.images.iter().flat_map(|v| v.to_le_bytes()).collect();
    let classes: Vec<u8> = set
        .wanted
        .iter()
        .flat_map(|k| k.map_or(-1i64, |k| k as i64).to_le_bytes())
        .collect();
    let views = vec![
        (
            "samples".to_string(),
            TensorView::new(Dtype::F32, vec![n, c, h, w], &images).map_err(|e| e.to_string())?,
        ),
        (
            "classes".to_string(),
            TensorView::new(Dtype::I64, vec![n], &classes).map_err(|e| e.to_string())?,
        ),
    ];
    let meta = [
        ("format".to_string(), FORMAT.to_string()),
        ("settings".to_string(), set.settings.to_string()),
    ];
    safetensors::serialize(views, Some(meta.into_iter().collect())).map_err(|e| e.to_string())
}

/// Decode a sample set; anything else (another kind of file, bad shapes) is an error.
pub fn decode(bytes: &[u8]) -> Result<SampleSet, String> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format!(
            "not a sample set (metadata format is {:?}, expected \"{FORMAT}\")",
            meta.get("format")
        ));
    }
    let settings: serde_json::Value = meta
        .get("settings")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| format!("bad settings: {e}"))?
        .unwrap_or(serde_json::Value::Null);
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt sample set: {e}"))?;
    let samples = st
        .tensor("samples")
        .map_err(|_| "the sample set has no \"samples\" tensor".to_string())?;
    let classes = st
        .tensor("classes")
        .map_err(|_| "the sample set has no \"classes\" tensor".to_string())?;
    let (&[n, c, h, w], &[m]) = (samples.shape(), classes.shape()) else {
        return Err(format!(
            "bad shapes: samples {:?}, classes {:?}",
            samples.shape(),
            classes.shape()
        ));
    };
    if samples.dtype() != Dtype::F32 || classes.dtype() != Dtype::I64 || n != m {
        return Err("samples must be f32 [N, C, H, W] and classes i64 [N]".into());
    }
    let images = samples
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let wanted = classes
        .data()
        .chunks_exact(8)
        .map(|b| {
            let k = i64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
            usize::try_from(k).ok()
        })
        .collect();
    Ok(SampleSet {
        images,
        shape: [c, h, w],
        wanted,
        settings,
    })
}

/// Write a sample set atomically.
pub fn save(path: &Path, set: &SampleSet) -> Result<(), String> {
    crate::weights::write_atomic(path, &encode(set)?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Read a sample set, naming the file in any error.
pub fn load(path: &Path) -> Result<SampleSet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::SampleSet;

    fn set(seed: u64, weights: &str, crc: Option<&str>) -> SampleSet {
        let mut settings =
            serde_json::json!({"sampler": "Ddpm", "steps": 1000, "seed": seed, "weights": weights});
        if let Some(crc) = crc {
            settings["weights_crc32"] = crc.into();
        }
        SampleSet {
            images: vec![0.0; 4],
            shape: [1, 2, 2],
            wanted: vec![None],
            settings,
        }
    }

    #[test]
    fn sets_match_on_the_weights_checksum_where_both_have_one_and_on_the_path_otherwise() {
        // Copies of one file at two paths go together.
        let mut a = set(1, "/tmp/m.safetensors", Some("0badcafe"));
        a.extend(set(2, "weights/m.safetensors", Some("0badcafe")))
            .unwrap();
        assert_eq!(a.len(), 2);
        // Other weights at the same path do not.
        let err = a
            .extend(set(3, "/tmp/m.safetensors", Some("12345678")))
            .unwrap_err();
        assert!(err.contains("made differently"), "{err}");
        // A set saved before checksums were recorded goes with one from the same path…
        a.extend(set(4, "/tmp/m.safetensors", None)).unwrap();
        assert_eq!(a.len(), 3);
        // …and not with one from another path.
        assert!(a.extend(set(5, "other.safetensors", None)).is_err());
        // Anything else that differs still keeps sets apart.
        let mut b = set(6, "/tmp/m.safetensors", Some("0badcafe"));
        b.settings["steps"] = 50.into();
        assert!(a.extend(b).is_err());
        assert_eq!(a.len(), 3);
    }
}
