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

/// Swap a completely written `tmp` folder in as `out/checkpoint`. Its files and the folder
/// are flushed to disk first; the current checkpoint is renamed to `checkpoint.old` and
/// removed only after the new one is in place, so a crash at any point leaves a complete
/// checkpoint under one of the two names (resume looks at both). When only `checkpoint.old`
/// is there (a crash between the renames), it stays until the new checkpoint is in.
pub(crate) fn swap_in_checkpoint(out: &std::path::Path, tmp: &std::path::Path) -> Result<()> {
    let io = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    sync_tree(tmp).map_err(io(tmp))?;
    let cur = out.join("checkpoint");
    let old = out.join("checkpoint.old");
    if cur.exists() {
        // `checkpoint` is complete, so an older copy is redundant.
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&cur, &old).map_err(io(&cur))?;
    }
    std::fs::rename(tmp, &cur).map_err(io(&cur))?;
    sync_dir(out).map_err(io(out))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Flush every file under `dir`, then the folders themselves.
fn sync_tree(dir: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            sync_tree(&e.path())?;
        } else if t.is_file() {
            std::fs::File::open(e.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Flush a folder's entries (renames into it) to disk; a no-op where folders cannot be
/// opened (Windows).
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all().or_else(|e| {
            if e.kind() == std::io::ErrorKind::InvalidInput || cfg!(windows) {
                Ok(())
            } else {
                Err(e)
            }
        }),
        Err(_) if cfg!(windows) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Load a checkpoint's model state (`dir`, as the plugin's `save_state` wrote it). With
/// `reset_optimizer` the weights (and moving average) come from `dir` and the optimizer starts
/// afresh — its state is the one the model itself writes before any step, and `dir`'s own
/// (which may be missing) is not read. Without it a missing optimizer state is an error.
pub fn load_model_state(
    model: &mut adt_plugin_host::Model,
    dir: &std::path::Path,
    reset_optimizer: bool,
) -> Result<()> {
    use std::path::Path;
    if !reset_optimizer {
        if !dir.join(OPTIMIZER_FILE).is_file() {
            return Err(Error::Invalid(format!(
                "{} has no optimizer state ({OPTIMIZER_FILE}): resuming without it would train \
                 differently from the run it continues; pass --reset-optimizer to resume with \
                 a fresh optimizer",
                dir.display()
            )));
        }
        return Ok(model.load_state(dir)?);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let staged = dir.with_file_name(".reset-optimizer");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(io(&staged))?;
    }
    std::fs::create_dir_all(&staged).map_err(io(&staged))?;
    // The fresh optimizer state, then the checkpoint's files beside it.
    model.save_state(&staged)?;
    for e in std::fs::read_dir(&staged).map_err(io(&staged))? {
        let p = e.map_err(io(&staged))?.path();
        if p.file_name().is_some_and(|n| n != OPTIMIZER_FILE) {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if let Some(name) = p.file_name()
            && name != OPTIMIZER_FILE
            && p.is_file()
        {
            let to = staged.join(name);
            std::fs::copy(&p, &to).map_err(io(&to))?;
        }
    }
    let loaded = model.load_state(&staged);
    std::fs::remove_dir_all(&staged).map_err(io(&staged))?;
    Ok(loaded?)
}

/// The optimizer's file in a model checkpoint folder.
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Drop the rows of a training log (`iter,…` CSV, header kept) written after step `start`:
/// the log then matches the checkpoint a resume starts from.
pub(crate) fn trim_log(path: &std::path::Path, start: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split(',')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .is_none_or(|i| i <= start)
        })
        .collect();
    std::fs::write(path, kept.join("\n") + "\n").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
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

#[cfg(test)]
mod tests {
    /// The new checkpoint replaces the current one, or the `checkpoint.old` a crash between
    /// the renames left, and no copy is left behind.
    #[test]
    fn a_checkpoint_swaps_in_over_either_name() {
        for start in ["checkpoint", "checkpoint.old"] {
            let out = tempfile::tempdir().unwrap();
            let prev = out.path().join(start);
            std::fs::create_dir_all(prev.join("model")).unwrap();
            std::fs::write(prev.join("model/w"), b"old").unwrap();
            let tmp = out.path().join("checkpoint.tmp");
            std::fs::create_dir_all(tmp.join("model")).unwrap();
            std::fs::write(tmp.join("model/w"), b"new").unwrap();
            super::swap_in_checkpoint(out.path(), &tmp).unwrap();
            let cur = out.path().join("checkpoint/model/w");
            assert_eq!(std::fs::read(cur).unwrap(), b"new", "{start}");
            assert!(!out.path().join("checkpoint.old").exists() && !tmp.exists());
        }
    }

    #[test]
    fn the_log_is_trimmed_to_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.csv");
        std::fs::write(&p, "iter,loss\n1,0.5\n2,0.4\n3,0.3\n").unwrap();
        super::trim_log(&p, 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "iter,loss\n1,0.5\n2,0.4\n"
        );
    }
}
