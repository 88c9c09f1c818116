//! The integration tests of `adt-metrics`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod clip_parity;
mod common;
mod fid_parity;
mod inception;
mod npz_numpy;
mod resize;
mod weights;
