//! Writing grids and samples as PNG, and the reverse process as an animated GIF.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::image::{Batch, grid_rgba, tile_pixels};

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Write 8-bit pixels (`channels` = 1, 3 or 4) as a PNG.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<(), String> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(format!("cannot write {c}-channel PNG")),
    };
    let mut enc = png::Encoder::new(create(path)?, width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let err = |e: png::EncodingError| format!("cannot write {}: {e}", path.display());
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(pixels).map_err(err)?;
    writer.finish().map_err(err)
}

/// Write the batch as a grid PNG (tiles in rows, 2-pixel padding).
pub fn write_grid(path: &Path, batch: Batch<'_>) -> Result<(), String> {
    let (w, h, rgba) = grid_rgba(batch);
    write_png(path, w, h, 4, &rgba)
}

/// Write every sample as `DIR/sample_0000.png`, …
pub fn write_each(dir: &Path, batch: Batch<'_>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let [n, c, h, w] = batch.shape;
    let channels = if c >= 3 { 3 } else { 1 };
    for i in 0..n {
        let path = dir.join(format!("sample_{i:04}.png"));
        write_png(&path, w, h, channels, &tile_pixels(batch, i))?;
    }
    Ok(())
}

/// An animated GIF of grids, one frame per call to [`GifWriter::frame`].
pub struct GifWriter {
    encoder: gif::Encoder<BufWriter<File>>,
    width: u16,
    height: u16,
    grey: bool,
    path: String,
}

impl GifWriter {
    /// Start a GIF for grids of `shape`; `grey` uses an exact 256-grey palette.
    pub fn create(path: &Path, shape: [usize; 4]) -> Result<Self, String> {
        let (w, h) = crate::image::grid_size(shape);
        if w > u16::MAX as usize || h > u16::MAX as usize {
            return Err(format!("grid {w}×{h} is too large for a GIF"));
        }
        let grey = shape[1] < 3;
        let palette: Vec<u8> = if grey {
            (0..=255u8).flat_map(|v| [v, v, v]).collect()
        } else {
            Vec::new()
        };
        let err = |e: gif::EncodingError| format!("cannot write {}: {e}", path.display());
        let mut encoder =
            gif::Encoder::new(create(path)?, w as u16, h as u16, &palette).map_err(err)?;
        encoder.set_repeat(gif::Repeat::Infinite).map_err(err)?;
        Ok(Self {
            encoder,
            width: w as u16,
            height: h as u16,
            grey,
            path: path.display().to_string(),
        })
    }

    /// Append the grid of `batch`, shown for `delay_cs` hundredths of a second.
    pub fn frame(&mut self, batch: Batch<'_>, delay_cs: u16) -> Result<(), String> {
        let (_, _, mut rgba) = grid_rgba(batch);
        let mut frame = if self.grey {
            let idx: Vec<u8> = rgba.chunks_exact(4).map(|p| p[0]).collect();
            gif::Frame::from_indexed_pixels(self.width, self.height, idx, None)
        } else {
            gif::Frame::from_rgba_speed(self.width, self.height, &mut rgba, 10)
        };
        frame.delay = delay_cs;
        self.encoder
            .write_frame(&frame)
            .map_err(|e| format!("cannot write {}: {e}", self.path))
    }
}
