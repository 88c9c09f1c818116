//! The integration tests of `adt-bench`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod ci_cli;
mod cli;
mod common;
mod device_cli;
mod fid_cli;
mod run_cli;
mod score_cli;
