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
//! See the plugin author's guide in the repository's `docs/plugin-guide.md`, and start from
//! its template (`plugins/template`), which implements every call.
//!
//! # Example: an inference-only model
//!
//! The sampling calls are required; the training calls (`decode_vjp`, `denoise_vjp`,
//! `diffusion_loss`, `zero_grad`, `step`, `save_state`, `load_state`) default to
//! [`PluginError::unsupported`], and `trains: false` tells the host not to tune the model.
//!
//! ```
//! use adt_plugin_api::*;
//!
//! /// Predicts zero noise everywhere, for 8×8 RGB images.
//! struct Zero;
//!
//! impl ModelPlugin for Zero {
//!     fn create(_config: &serde_json::Value) -> PluginResult<Self> {
//!         Ok(Zero)
//!     }
//!     fn describe(&self) -> PluginResult<ModelDescription> {
//!         Ok(ModelDescription {
//!             name: "zero".into(),
//!             family: "example".into(),
//!             parameterization: Parameterization::Eps,
//!             schedule: NoiseSchedule::Discrete { alphas_cumprod: vec![0.99, 0.5, 0.01] },
//!             latent_shape: [3, 8, 8],
//!             image_shape: [3, 8, 8],
//!             parameters: 0,
//!             trainable_parameters: 0,
//!             default_guidance: 1.0,
//!             default_spacing: Spacing::Trailing,
//!             sampler_default_spacing: false,
//!             steps_offset: 0,
//!             set_alpha_to_one: None,
//!             weights_hash: None,
//!             trains: false,
//!             extra: serde_json::Value::Null,
//!         })
//!     }
//!     fn encode_prompts(&mut self, _prompts: &[String]) -> PluginResult<u64> {
//!         Ok(1)
//!     }
//!     fn release_cond(&mut self, _handle: u64) -> PluginResult<()> {
//!         Ok(())
//!     }
//!     fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
//!         Ok(images.to_owned())
//!     }
//!     fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
//!         Ok(latents.to_owned())
//!     }
//!     fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
//!         Ok(HostTensor::zeros(args.x.shape))
//!     }
//! }
//!
//! // In the plugin's `cdylib` crate (once per library):
//! adt_plugin_api::export_model_plugin!(Zero, name = "zero", version = "0.1.0");
//!
//! let mut m = Zero::create(&serde_json::json!({})).unwrap();
//! assert!(!m.describe().unwrap().trains);
//! let e = m.step(&OptimConfig::adamw(1e-4)).unwrap_err();
//! assert!(e.to_string().contains("`step` is not supported"));
//! ```

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
    PlanStep, SamplerInfo, Spacing, Src, StepStats, TRAINING_CALLS, Term,
};
