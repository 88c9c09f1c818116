//! The integration tests of `adt-plugin-tiny`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod gradients;
mod state;
