//! Training and sampling across the plugin boundary: executing sampler plans against a model
//! ([`rollout`]), plain diffusion training ([`pretrain`]), and (later) the ADT and
//! fine-tuning loops.
//!
//! **Architecture Invariant:** the tuner talks to models only through
//! `adt_plugin_host::Model` (the C ABI) and never depends on a concrete plugin; concrete plugins
//! appear only as dev-dependencies. It never prints: progress goes through [`Progress`].

#![forbid(unsafe_code)]

pub mod adamw;
pub mod adt;
pub mod backbone;
pub mod data;
pub mod dinov2;
pub mod disc;
pub mod paths;
pub mod pretrain;
pub mod probe;
pub mod rollout;

/// Errors of the tuner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin call failed.
    #[error(transparent)]
    Plugin(#[from] adt_plugin_host::Error),
    /// The data source failed to open.
    #[error(transparent)]
    Data(#[from] adt_datasets::Error),
    /// The data source ran out of usable records.
    #[error("data source has no usable records left ({skipped} bad records skipped)")]
    DataExhausted {
        /// Bad records skipped on the way.
        skipped: usize,
    },
    /// Training diverged.
    #[error("training stopped: {reason}")]
    Diverged {
        /// What happened.
        reason: String,
    },
    /// File IO.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// Swap a completely written `tmp` folder in as `out/checkpoint`: the old one is renamed to
/// `checkpoint.old` first and removed last, so a crash leaves a complete checkpoint under one
/// of the two names (resume looks at both).
pub(crate) fn swap_in_checkpoint(out: &std::path::Path, tmp: &std::path::Path) -> Result<()> {
    let io = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let cur = out.join("checkpoint");
    let old = out.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&old);
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(io(&cur))?;
    }
    std::fs::rename(tmp, &cur).map_err(io(&cur))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Progress reporting from long loops (the harness draws bars; tests ignore it).
pub trait Progress {
    /// `done` of `total` units finished; `message` is a short status line.
    fn update(&mut self, done: u64, total: u64, message: &str);
    /// A notable event (bad record skipped, non-finite step, checkpoint written).
    fn event(&mut self, message: &str) {
        let _ = message;
    }
}

/// A [`Progress`] that discards everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _: u64, _: u64, _: &str) {}
}
