//! The integration tests of `adt-plugin-samplers`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod diffusers_reference;
mod gaussian;
mod table;
