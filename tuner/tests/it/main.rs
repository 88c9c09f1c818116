//! The integration tests of `adt-tuner`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod paths;
mod tune;
