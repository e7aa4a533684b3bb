//! Turning sample tensors into pixels: quantisation and the grid layout (shared by the CLI and
//! the page).

/// Padding between tiles of a grid, in pixels.
pub const GRID_PADDING: usize = 2;

/// Map a value in [−1, 1] to a byte: round((x + 1) · 127.5), clamped.
pub fn quantize(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// A batch of images as NCHW f32 values in [−1, 1].
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The values, NCHW.
    pub data: &'a [f32],
    /// [N, C, H, W].
    pub shape: [usize; 4],
}

/// Rows and columns of a near-square grid for `count` tiles.
pub fn grid_dims(count: usize) -> (usize, usize) {
    let cols = (count as f64).sqrt().ceil().max(1.0) as usize;
    let rows = count.div_ceil(cols).max(1);
    (rows, cols)
}

/// Size in pixels of the grid for a batch: (width, height).
pub fn grid_size(shape: [usize; 4]) -> (usize, usize) {
    let [n, _, h, w] = shape;
    let (rows, cols) = grid_dims(n);
    (
        cols * w + (cols + 1) * GRID_PADDING,
        rows * h + (rows + 1) * GRID_PADDING,
    )
}

/// Lay the batch out as an RGBA grid (row-major tiles, `GRID_PADDING` pixels of dark padding).
/// Grey images are replicated to RGB; a fourth channel is ignored.
pub fn grid_rgba(batch: Batch<'_>) -> (usize, usize, Vec<u8>) {
    let [n, c, h, w] = batch.shape;
    let (_, cols) = grid_dims(n);
    let (gw, gh) = grid_size(batch.shape);
    let mut out = vec![0u8; gw * gh * 4];
    for px in out.chunks_exact_mut(4) {
        px.copy_from_slice(&[24, 24, 24, 255]);
    }
    let plane = h * w;
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        let x0 = GRID_PADDING + col * (w + GRID_PADDING);
        let y0 = GRID_PADDING + r * (h + GRID_PADDING);
        let img = &batch.data[i * c * plane..(i + 1) * c * plane];
        for y in 0..h {
            for x in 0..w {
                let o = ((y0 + y) * gw + x0 + x) * 4;
                for k in 0..3 {
                    let ch = if c >= 3 { k } else { 0 };
                    out[o + k] = quantize(img[ch * plane + y * w + x]);
                }
                out[o + 3] = 255;
            }
        }
    }
    (gw, gh, out)
}

/// One image of the batch as interleaved 8-bit pixels (1 or 3 channels).
pub fn tile_pixels(batch: Batch<'_>, index: usize) -> Vec<u8> {
    let [_, c, h, w] = batch.shape;
    let plane = h * w;
    let keep = if c >= 3 { 3 } else { 1 };
    let img = &batch.data[index * c * plane..(index + 1) * c * plane];
    let mut out = Vec::with_capacity(plane * keep);
    for p in 0..plane {
        for k in 0..keep {
            out.push(quantize(img[k * plane + p]));
        }
    }
    out
}
