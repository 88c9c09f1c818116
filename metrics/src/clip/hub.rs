//! Where the score models' files come from: a local path, the Hugging Face cache
//! (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), or a download into it
//! (hf-hub) unless `HF_HUB_OFFLINE=1`; a file that cannot be had is named in the error with
//! the way to supply it. Other files (the aesthetic head, open_clip's BPE) are fetched once
//! into the adt-bench cache and verified.

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

/// Whether `rel` names a path inside the folder it is joined to: relative, not empty, every
/// component a plain name (no `..`, `.`, root or drive prefix). Revisions and shard names come
/// from files and command lines and are checked with it before they are used as paths.
pub fn stays_inside(rel: &Path) -> bool {
    rel.components().next().is_some()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Downloads are allowed (`HF_HUB_OFFLINE` unset or 0).
pub fn online() -> bool {
    !std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Does `spec` name a Hugging Face repo (`org/name[@rev]`) rather than a local path?
pub fn is_repo_id(spec: &str) -> bool {
    let repo = spec.split('@').next().unwrap_or(spec);
    !Path::new(spec).exists()
        && repo.split('/').count() == 2
        && !spec.starts_with(['.', '/', '~'])
        && !repo.ends_with(".pt")
        && !repo.ends_with(".safetensors")
}

/// One file of a repo: from the cache, else downloaded (when `online`). `Ok(None)` when the
/// repo does not have it (only checked when online); the error names the file otherwise.
pub fn repo_file(spec: &str, file: &str, flag: &str) -> Result<Option<PathBuf>> {
    let (repo, rev) = match spec.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (spec, None),
    };
    if rev.is_some_and(|r| !stays_inside(Path::new(r))) {
        return Err(Error::Clip(format!(
            "{spec}: a revision is a plain name (`org/name@REVISION`), with no `..`, `.` or \
             absolute parts"
        )));
    }
    let hf_repo = |r: &str| match rev {
        Some(v) => hf_hub::Repo::with_revision(r.into(), hf_hub::RepoType::Model, v.into()),
        None => hf_hub::Repo::model(r.into()),
    };
    let cache = cache_dir();
    if let Some(p) = cache
        .as_deref()
        .and_then(|c| cached(c, hf_repo(repo), file))
    {
        return Ok(Some(p));
    }
    let supply = format!(
        "supply {repo}'s `{file}`: `huggingface-cli download {repo} {file}` where there is network \
         (into {}), or pass a local copy with {flag}",
        cache
            .as_deref()
            .map_or("the Hugging Face cache".into(), |c| c.display().to_string())
    );
    if !online() {
        return Err(Error::Clip(format!(
            "{repo}: `{file}` is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); {supply}"
        )));
    }
    let Some(c) = cache else {
        return Err(Error::Clip(format!(
            "no Hugging Face cache folder (HOME unset); {supply}"
        )));
    };
    let mut b =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(c)).with_progress(false);
    if let Ok(ep) = std::env::var("HF_ENDPOINT") {
        b = b.with_endpoint(ep);
    }
    let api = b
        .build()
        .map_err(|e| Error::Clip(format!("{repo}: cannot start a download ({e}); {supply}")))?;
    let api = api.repo(hf_repo(repo));
    match api.get(file) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            // Distinguish "the repo has no such file" (a fallback may apply) from no network.
            if let Ok(info) = api.info()
                && !info.siblings.iter().any(|s| s.rfilename == file)
            {
                return Ok(None);
            }
            Err(Error::Clip(format!(
                "{repo}: downloading `{file}` failed ({e}); {supply}"
            )))
        }
    }
}

/// `file` of `repo` in the cache folder `c`. The cache resolves a branch through `refs/…`, a
/// file's content, so what it returns must still be inside the repo's snapshots.
fn cached(c: &Path, repo: hf_hub::Repo, file: &str) -> Option<PathBuf> {
    let snapshots = c.join(repo.folder_name()).join("snapshots");
    let p = hf_hub::Cache::new(c.to_path_buf()).repo(repo).get(file)?;
    p.strip_prefix(&snapshots)
        .is_ok_and(stays_inside)
        .then_some(p)
}

/// A transformers model folder: a local folder as is, or a repo's snapshot holding
/// `config.json`, one weights file (`model.safetensors`, else `pytorch_model.bin`) and the
/// `optional` files (tokenizer, processor) when the repo has them.
pub fn model_folder(spec: &str, optional: &[&str], flag: &str) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.is_dir() {
        return Ok(p);
    }
    if !is_repo_id(spec) {
        return Err(Error::Clip(format!(
            "{spec}: no such folder (give a transformers CLIPModel folder or a Hugging Face repo id)"
        )));
    }
    let config = repo_file(spec, "config.json", flag)?.ok_or_else(|| {
        Error::Clip(format!(
            "{spec} has no `config.json`: not a transformers CLIPModel repo"
        ))
    })?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Clip(format!("{spec}: bad cache path")))?;
    const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
    if !WEIGHTS.iter().any(|w| dir.join(w).is_file()) {
        let mut got = false;
        for w in WEIGHTS {
            if repo_file(spec, w, flag)?.is_some() {
                got = true;
                break;
            }
        }
        if !got {
            return Err(Error::Clip(format!(
                "{spec} has neither model.safetensors nor pytorch_model.bin"
            )));
        }
    }
    for f in optional {
        if !dir.join(f).is_file() {
            // Best effort: the folder works without them (a fallback may supply a tokenizer).
            let _ = repo_file(spec, f, flag);
        }
    }
    Ok(dir)
}

/// A file fetched once into the adt-bench cache from a URL (curl), checked by size and/or
/// SHA-256; the error names the file and where to put it.
pub fn cached_url(
    dest: &Path,
    url: &str,
    size: Option<u64>,
    sha256: Option<&str>,
    flag: &str,
) -> Result<PathBuf> {
    if dest.is_file() {
        return Ok(dest.to_path_buf());
    }
    let supply = format!(
        "download {url} where there is network and pass it with {flag} (or put it at {})",
        dest.display()
    );
    if !online() {
        return Err(Error::Clip(format!(
            "{} is not cached and downloads are off; {supply}",
            dest.display()
        )));
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".fetch-{}", std::process::id()));
    let out = std::process::Command::new("curl")
        .args(["-fsSL", "--retry", "2", "--connect-timeout", "15", "-o"])
        .arg(&tmp)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .output();
    let fail = |why: String| {
        let _ = std::fs::remove_file(&tmp);
        Error::Clip(format!("fetching {url} failed ({why}); {supply}"))
    };
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(fail(format!("curl {}", o.status))),
        Err(e) => return Err(fail(format!("cannot start curl: {e}"))),
    }
    let bytes = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Some(n) = size
        && bytes.len() as u64 != n
    {
        return Err(fail(format!("{} bytes, expected {n}", bytes.len())));
    }
    if let Some(want) = sha256 {
        let got = crate::weights::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if got != want {
            return Err(fail(format!("SHA-256 {got}, expected {want}")));
        }
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Revisions and `refs/main` contents that climb out of the repo's snapshots are never
    /// used as paths; a plain revision is.
    #[test]
    fn revisions_stay_inside_the_repo() {
        let e = repo_file("org/name@../../x", "config.json", "--flag").unwrap_err();
        assert!(e.to_string().contains("plain name"), "{e}");
        let c = tempfile::tempdir().unwrap();
        let root = c.path().join("models--org--name");
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::create_dir_all(root.join("snapshots/abc")).unwrap();
        std::fs::write(root.join("snapshots/abc/config.json"), "{}").unwrap();
        let outside = c.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("config.json"), "{}").unwrap();
        let main = || hf_hub::Repo::model("org/name".into());
        std::fs::write(root.join("refs/main"), "abc").unwrap();
        assert_eq!(
            cached(c.path(), main(), "config.json"),
            Some(root.join("snapshots/abc/config.json"))
        );
        for evil in ["../../elsewhere", outside.to_str().unwrap()] {
            std::fs::write(root.join("refs/main"), evil).unwrap();
            assert_eq!(cached(c.path(), main(), "config.json"), None, "{evil}");
        }
    }
}
