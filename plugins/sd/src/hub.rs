//! Where a pipeline's files are: a local folder, or a Hugging Face repo id looked up in the
//! Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The hub cache folder.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// A repo's snapshot in the cache layout `models--ORG--NAME/snapshots/REV/`, the revision
/// read from `refs/main` (or the only / newest snapshot).
pub fn cached_snapshot(cache: &Path, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let rev = match revision {
        Some(r) => r.to_string(),
        None => match std::fs::read_to_string(root.join("refs/main")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => {
                let mut snaps: Vec<PathBuf> = std::fs::read_dir(root.join("snapshots"))
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                snaps.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
                return snaps.pop();
            }
        },
    };
    let p = root.join("snapshots").join(rev);
    p.is_dir().then_some(p)
}

/// Resolve `weights` to a local pipeline folder: an existing folder as is; `org/name[@rev]`
/// from the Hugging Face cache.
pub fn resolve(weights: &str) -> Result<PathBuf> {
    let p = PathBuf::from(weights);
    if p.is_dir() {
        return Ok(p);
    }
    let (repo, rev) = match weights.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (weights, None),
    };
    let looks_like_repo = repo.split('/').count() == 2 && !weights.starts_with(['.', '/', '~']);
    if !looks_like_repo {
        return Err(Error::Pipeline(format!(
            "{weights}: no such folder (give a diffusers pipeline folder or a Hugging Face repo id)"
        )));
    }
    let cache = cache_dir();
    if let Some(snap) = cache.as_deref().and_then(|c| cached_snapshot(c, repo, rev)) {
        return Ok(snap);
    }
    Err(Error::Pipeline(format!(
        "{repo} is not in the Hugging Face cache ({}); download it first \
         (`huggingface-cli download {repo}`) or give a local folder",
        cache.map_or("no cache folder".into(), |c| c.display().to_string())
    )))
}
