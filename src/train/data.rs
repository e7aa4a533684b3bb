//! Training data: MNIST / Fashion-MNIST (idx `.gz`), Noto emoji (`.tar.gz` of PNGs), and a
//! synthetic set for tests. Images are scaled to [−1, 1], NCHW.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

/// Images in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Dataset name.
    pub name: String,
    /// NCHW values in [−1, 1].
    pub images: Vec<f32>,
    /// One label per image (empty when the dataset has none).
    pub labels: Vec<u8>,
    /// [C, H, W].
    pub shape: [usize; 3],
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Whether random horizontal flips are appropriate: never for digits, nor for Fashion-MNIST,
    /// whose shoes and bags all face one way (a mirrored ankle boot is not a Fashion-MNIST image:
    /// its classifier calls it a bag).
    pub flip_ok: bool,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels
            .len()
            .max(self.images.len() / self.per_image().max(1))
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image.
    pub fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image i's values.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.per_image();
        &self.images[i * n..(i + 1) * n]
    }

    /// Keep only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * self.per_image());
        self.labels.truncate(n);
    }
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Load a dataset by name from `data_dir` (the folder holding `mnist/`, `fashion-mnist/`,
/// `noto-emoji-32/`).
pub fn load(name: &str, data_dir: &Path, split: Split) -> Result<Dataset, String> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    match name {
        "mnist" | "fashion" => {
            let folder = data_dir.join(if name == "mnist" {
                "mnist"
            } else {
                "fashion-mnist"
            });
            let images = read_idx_images(&folder.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
            let labels = read_idx_labels(&folder.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
            if labels.len() * 28 * 28 != images.len() {
                return Err(format!(
                    "{}: {} labels for {} images",
                    folder.display(),
                    labels.len(),
                    images.len() / 784
                ));
            }
            let class_names = if name == "mnist" {
                (0..10).map(|i| i.to_string()).collect()
            } else {
                FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
            };
            Ok(Dataset {
                name: name.into(),
                images: images.iter().map(|&b| b as f32 / 127.5 - 1.0).collect(),
                labels,
                shape: [1, 28, 28],
                class_names,
                // Fashion-MNIST's photos are aligned: every shoe points left. Mirrored images are
                // off the data: with every other real test image mirrored, the Fréchet figure
                // against the other test images is 56 instead of 20, and 19% are labelled bags.
                flip_ok: false,
            })
        }
        "emoji" => {
            let path = data_dir.join("noto-emoji-32/noto-emoji-png32.tar.gz");
            let all = read_emoji(&path)?;
            // No official split: every 10th emoji is held out.
            let n = all.len() / (3 * 32 * 32);
            let mut images = Vec::new();
            for i in 0..n {
                let test = i % 10 == 9;
                if test == (split == Split::Test) {
                    images.extend_from_slice(&all[i * 3072..(i + 1) * 3072]);
                }
            }
            Ok(Dataset {
                name: name.into(),
                images,
                labels: Vec::new(),
                shape: [3, 32, 32],
                class_names: Vec::new(),
                flip_ok: true,
            })
        }
        "synthetic" => Ok(synthetic(64, 28, if split == Split::Train { 1 } else { 2 })),
        other => Err(format!(
            "unknown dataset \"{other}\": use mnist, fashion, emoji or synthetic"
        )),
    }
}

/// The default data folder: `../shared/data` next to the repository.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("../shared/data")
}

fn gunzip(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot open {}: {e} (expected the dataset's .gz file there; see --data)",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: not a valid gzip file ({e})", path.display()))?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Pixels (u8) of an idx3 image file, checked against its header (28×28 expected).
pub fn read_idx_images(path: &Path) -> Result<Vec<u8>, String> {
    let raw = gunzip(path)?;
    if raw.len() < 16 || be_u32(&raw, 0) != 0x0000_0803 {
        return Err(format!(
            "{}: not an idx image file (expected magic 0x00000803 and a 16-byte header)",
            path.display()
        ));
    }
    let (n, rows, cols) = (be_u32(&raw, 4) as usize, be_u32(&raw, 8), be_u32(&raw, 12));
    if rows != 28 || cols != 28 {
        return Err(format!(
            "{}: images are {rows}×{cols}, expected 28×28",
            path.display()
        ));
    }
    if raw.len() != 16 + n * 784 {
        return Err(format!(
            "{}: header says {n} images ({} bytes) but the file holds {} bytes",
            path.display(),
            16 + n * 784,
            raw.len()
        ));
    }
    Ok(raw[16..].to_vec())
}

/// Labels of an idx1 label file, each checked to be 0..=9.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, String> {
    let raw = gunzip(path)?;
    if raw.len() < 8 || be_u32(&raw, 0) != 0x0000_0801 {
        return Err(format!(
            "{}: not an idx label file (expected magic 0x00000801 and an 8-byte header)",
            path.display()
        ));
    }
    let n = be_u32(&raw, 4) as usize;
    if raw.len() != 8 + n {
        return Err(format!(
            "{}: header says {n} labels but the file holds {}",
            path.display(),
            raw.len() - 8
        ));
    }
    if let Some(bad) = raw[8..].iter().position(|&l| l > 9) {
        return Err(format!(
            "{}: label {} at index {bad} is not 0..9",
            path.display(),
            raw[8 + bad]
        ));
    }
    Ok(raw[8..].to_vec())
}

/// Every 32×32 RGBA emoji of the archive, flattened onto a white background, as CHW RGB
/// values in [−1, 1] (in archive order).
pub fn read_emoji(path: &Path) -> Result<Vec<f32>, String> {
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot open {}: {e} (expected noto-emoji-png32.tar.gz; see --data)",
            path.display()
        )
    })?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    let mut names = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: not a tar.gz archive ({e})", path.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: corrupt archive ({e})", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !name.ends_with(".png") {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{name}: {e}"))?;
        names.push((name.clone(), bytes));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in names {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder
            .read_info()
            .map_err(|e| format!("{name}: bad PNG ({e})"))?;
        let mut buf = vec![0u8; reader.output_buffer_size().unwrap_or(32 * 32 * 4)];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| format!("{name}: bad PNG ({e})"))?;
        if info.width != 32 || info.height != 32 {
            return Err(format!(
                "{name}: {}×{}, expected 32×32",
                info.width, info.height
            ));
        }
        let px = &buf[..info.buffer_size()];
        let channels = info.color_type.samples();
        let mut chw = vec![0f32; 3 * 1024];
        for p in 0..1024 {
            let s = &px[p * channels..(p + 1) * channels];
            let (rgb, a) = match channels {
                4 => ([s[0], s[1], s[2]], s[3]),
                3 => ([s[0], s[1], s[2]], 255),
                2 => ([s[0], s[0], s[0]], s[1]),
                _ => ([s[0], s[0], s[0]], 255),
            };
            let alpha = a as f32 / 255.0;
            for c in 0..3 {
                // Composite over white.
                let v = rgb[c] as f32 / 255.0 * alpha + (1.0 - alpha);
                chw[c * 1024 + p] = v * 2.0 - 1.0;
            }
        }
        out.extend_from_slice(&chw);
    }
    if out.is_empty() {
        return Err(format!("{}: no PNG images found", path.display()));
    }
    Ok(out)
}

/// A small labelled set of simple shapes (for tests): class 0 = horizontal bar,
/// 1 = vertical bar, 2 = square, 3 = cross; positions vary with the seed.
pub fn synthetic(n: usize, size: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * size * size);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 4) as u8;
        let c = size / 2 + rng.below(5) as usize - 2;
        let mut img = vec![-1f32; size * size];
        for y in 0..size {
            for x in 0..size {
                let on = match class {
                    0 => y.abs_diff(c) <= 2 && x.abs_diff(size / 2) <= size / 3,
                    1 => x.abs_diff(c) <= 2 && y.abs_diff(size / 2) <= size / 3,
                    2 => y.abs_diff(c) <= size / 5 && x.abs_diff(c) <= size / 5,
                    _ => {
                        (y.abs_diff(c) <= 1 || x.abs_diff(c) <= 1)
                            && y.abs_diff(c) + x.abs_diff(c) < size / 2
                    }
                };
                if on {
                    img[y * size + x] = 1.0;
                }
            }
        }
        images.extend(img);
        labels.push(class);
    }
    Dataset {
        name: "synthetic".into(),
        images,
        labels,
        shape: [1, size, size],
        class_names: ["bar", "pillar", "square", "cross"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        flip_ok: false,
    }
}

/// Serializable position of a [`Batcher`] (for exact resume).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatcherState {
    /// Epoch number.
    pub epoch: u64,
    /// Position in the epoch's order.
    pub pos: usize,
    /// RNG state (s0..s3), spare normal.
    pub rng: ([u64; 4], Option<f64>),
}

/// Draws shuffled mini-batches, reshuffling every epoch with a seeded generator.
pub struct Batcher {
    order: Vec<usize>,
    epoch: u64,
    pos: usize,
    rng: Rng,
    seed: u64,
    flip: bool,
}

impl Batcher {
    /// A batcher over `n` items.
    pub fn new(n: usize, seed: u64, flip: bool) -> Self {
        let mut b = Self {
            order: (0..n).collect(),
            epoch: 0,
            pos: 0,
            rng: Rng::new(seed ^ 0xBA7C_4E55),
            seed,
            flip,
        };
        b.shuffle();
        b
    }

    fn shuffle(&mut self) {
        // The order of each epoch depends only on (seed, epoch).
        let mut rng = Rng::new(self.seed.wrapping_add(self.epoch.wrapping_mul(0x9E37_79B9)));
        self.order.sort_unstable();
        for i in (1..self.order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            self.order.swap(i, j);
        }
    }

    /// The next batch: (images NCHW, labels).
    pub fn next(&mut self, data: &Dataset, batch: usize) -> (Vec<f32>, Vec<u8>) {
        let [c, h, w] = data.shape;
        let mut images = Vec::with_capacity(batch * c * h * w);
        let mut labels = Vec::with_capacity(batch);
        for _ in 0..batch {
            if self.pos >= self.order.len() {
                self.epoch += 1;
                self.pos = 0;
                self.shuffle();
            }
            let i = self.order[self.pos];
            self.pos += 1;
            let img = data.image(i);
            if self.flip && self.rng.below(2) == 1 {
                for ch in 0..c {
                    for y in 0..h {
                        let row = &img[ch * h * w + y * w..ch * h * w + (y + 1) * w];
                        images.extend(row.iter().rev());
                    }
                }
            } else {
                images.extend_from_slice(img);
            }
            labels.push(data.labels.get(i).copied().unwrap_or(0));
        }
        (images, labels)
    }

    /// Current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Save the position.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            epoch: self.epoch,
            pos: self.pos,
            rng: self.rng.state(),
        }
    }

    /// Restore a position saved with [`Batcher::state`].
    pub fn restore(&mut self, state: &BatcherState) {
        self.epoch = state.epoch;
        self.shuffle();
        self.pos = state.pos.min(self.order.len());
        self.rng = Rng::from_state(state.rng.0, state.rng.1);
    }
}
