//! Browser shell (wasm32): wasm-bindgen API over the shared core.
