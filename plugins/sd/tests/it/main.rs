//! The integration tests of `adt-plugin-sd`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod common;
mod loading;
mod plugin;
mod sd15_parity;
mod sd3_parity;
mod sdxl_parity;
mod tokenizers;
