//! Stable Diffusion 1.x, SDXL and SD3 on candle, built from diffusers pipeline folders.
//!
//! Every component is built from its own `config.json`, so the tiny test pipelines of
//! `shared/fixtures/diffusers-tiny` and real checkpoints run the same code. Every op on a path
//! that is differentiated (denoiser, VAE decoder) has a backward (see [`nn`]).

#![forbid(unsafe_code)]

pub mod clip;
pub mod hub;
pub mod load;
pub mod mmdit;
pub mod nn;
pub mod pipeline;
pub mod plugin;
pub mod t5;
pub mod tokenizer;
pub mod unet;
pub mod vae;

/// What can go wrong building or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The weights lack a tensor the config implies.
    #[error("{component}: the weights lack tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// Component (`unet`, `vae`, …).
        component: String,
        /// Tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor's shape disagrees with the config.
    #[error(
        "{component}: tensor `{name}` has shape {found:?}, but the config implies {expected:?}"
    )]
    TensorShape {
        /// Component.
        component: String,
        /// Tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A config is invalid or asks for something unsupported.
    #[error("{0}")]
    Config(String),
    /// Bad input to a model call.
    #[error("{0}")]
    Input(String),
    /// A pipeline folder is missing, incomplete or of another family.
    #[error("{0}")]
    Pipeline(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
