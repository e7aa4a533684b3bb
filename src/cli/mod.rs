//! Native shell helpers: device choice, PNG/GIF output, progress bars (not built for wasm).

pub mod device;
pub mod output;
pub mod progress;
