//! The adt-bench plugin ABI and SDK.
//!
//! **API Boundary.** This crate is what plugin `cdylib`s link against. It holds the versioned
//! C ABI ([`abi`]: `#[repr(C)]` header, function tables, tensor and buffer descriptors), the
//! JSON vocabulary carried across it ([`types`]), and the SDK ([`sdk`]): safe traits plus the
//! export macros that write all of the C glue. It depends on no tensor library: candle never
//! crosses the boundary (each copy of candle has its own tensor ids, so sharing tensors between
//! two copies would corrupt autograd silently).
//!
//! Writing a plugin: implement [`ModelPlugin`], then in a `cdylib`
//! `adt_plugin_api::export_model_plugin!(MyModel, name = "mine", version = env!("CARGO_PKG_VERSION"));`.
//! See the plugin author's guide in the repository's `docs/plugin-guide.md`.

#![warn(missing_docs)]

pub mod abi;
pub mod buf;
pub mod sdk;
pub mod tensor;
pub mod types;

pub use sdk::{DenoiseArgs, ModelPlugin, PluginError, PluginResult, SamplerPlugin};
pub use tensor::{HostTensor, TensorRef};
pub use types::{
    ModelDescription, NoiseSchedule, OptimConfig, Parameterization, Plan, PlanEval, PlanRequest,
    PlanStep, SamplerInfo, Spacing, Src, StepStats, Term,
};
