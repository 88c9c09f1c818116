//! The integration tests of `adt-integration-tests`, one module per area, linked into one test binary
//! (one link for the crate instead of one per file).

mod benchmark;
mod conformance;
mod gaussian_rollout;
mod hub_downloads;
mod plugin_boundary;
mod sampler_plugins;
mod sd_pipelines;
mod sd_run;
mod search_path;
mod template;
