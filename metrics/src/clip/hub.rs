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
    let endpoint = std::env::var("HF_ENDPOINT").ok();
    let online = online().then_some(endpoint.as_deref());
    repo_file_in(spec, file, flag, cache_dir(), online)
}

/// [`repo_file`] with an explicit cache folder; `online` is `None` when downloads are off,
/// else the endpoint to use (`None` inside: huggingface.co).
pub fn repo_file_in(
    spec: &str,
    file: &str,
    flag: &str,
    cache: Option<PathBuf>,
    online: Option<Option<&str>>,
) -> Result<Option<PathBuf>> {
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
    let Some(endpoint) = online else {
        return Err(Error::Clip(format!(
            "{repo}: `{file}` is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); {supply}"
        )));
    };
    let Some(c) = cache else {
        return Err(Error::Clip(format!(
            "no Hugging Face cache folder (HOME unset); {supply}"
        )));
    };
    let mut b = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(c.clone()))
        .with_progress(false);
    if let Some(ep) = endpoint {
        b = b.with_endpoint(ep.to_string());
    }
    let api = b
        .build()
        .map_err(|e| Error::Clip(format!("{repo}: cannot start a download ({e}); {supply}")))?;
    let fail = |e: &dyn std::fmt::Display| {
        Error::Clip(format!(
            "{repo}: downloading `{file}` failed ({e}); {supply}"
        ))
    };
    // Every file of a repo comes from one commit: the one the cache already resolves the
    // revision to (files fetched before), else the one the hub lists for it now; the
    // revision is then recorded as pointing at it, as the hub's own client does.
    let branch = rev.unwrap_or("main");
    let listed = match cached_commit(&c, repo, branch) {
        Some(commit) => (commit, None),
        None => {
            let info = api.repo(hf_repo(repo)).info().map_err(|e| fail(&e))?;
            let commit = info.sha.trim().to_string();
            if !is_commit(&commit) {
                return Err(fail(&format!("the hub answered {commit:?} for the commit")));
            }
            (commit, Some(info.siblings))
        }
    };
    let (commit, siblings) = listed;
    let at = |r: &str| hf_hub::Repo::with_revision(repo.into(), hf_hub::RepoType::Model, r.into());
    let pinned = api.repo(at(&commit));
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pinned.get(file)));
    match got {
        Ok(Ok(p)) => {
            // A commit the cache already named needs no new record.
            if siblings.is_some() && branch != commit {
                hf_hub::Cache::new(c.clone())
                    .repo(at(branch))
                    .create_ref(&commit)
                    .map_err(|e| fail(&e))?;
            }
            Ok(Some(p))
        }
        Ok(Err(e)) => {
            // Distinguish "the repo has no such file" (a fallback may apply) from no network.
            let siblings = siblings.or_else(|| pinned.info().ok().map(|i| i.siblings));
            if siblings.is_some_and(|s| !s.iter().any(|s| s.rfilename == file)) {
                return Ok(None);
            }
            Err(fail(&e))
        }
        Err(_) => Err(fail(&"the download client failed on the hub's answer")),
    }
}

/// A full commit hash (40 hex digits).
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit the cache resolves `branch` of `repo` to (`refs/BRANCH`), when it is a commit
/// hash; a revision that is itself a commit hash is its own.
fn cached_commit(c: &Path, repo: &str, branch: &str) -> Option<String> {
    if is_commit(branch) {
        return Some(branch.to_string());
    }
    let folder = hf_hub::Repo::model(repo.into()).folder_name();
    let s = std::fs::read_to_string(c.join(folder).join("refs").join(branch)).ok()?;
    let s = s.trim();
    is_commit(s).then(|| s.to_string())
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

/// The SHA-256 the hub published for a cached file: the cache stores large (LFS) files as
/// `blobs/SHA256` with the snapshot's entry a link to it, so the name of the file a path
/// resolves to is that hash. `None` when the path does not resolve into a `blobs` folder or
/// the name is not a SHA-256 (small files are stored under their git blob id).
pub fn published_sha256(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let name = real.file_name()?.to_str()?;
    let in_blobs = real.parent()?.file_name()? == "blobs";
    (in_blobs && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| name.to_ascii_lowercase())
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

/// A file fetched once from `url` into `dest`, pinned by its size and full SHA-256: the
/// download is capped at `size` bytes and checked before it is moved into place, and a cached
/// copy is checked again (size, then a streamed SHA-256) every time it is used, so a file
/// swapped or damaged in the cache is refused with the way out rather than scored with.
pub fn cached_url(dest: &Path, url: &str, size: u64, sha256: &str, flag: &str) -> Result<PathBuf> {
    let supply = format!(
        "download {url} where there is network and pass it with {flag} (or put it at {})",
        dest.display()
    );
    if dest.is_file() {
        return match check_pinned(dest, size, sha256)? {
            None => Ok(dest.to_path_buf()),
            Some(why) => Err(Error::Clip(format!(
                "the cached {} is not the pinned file ({why}); delete it to fetch it again, or {supply}",
                dest.display()
            ))),
        };
    }
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
        .args([
            "-fsSL",
            "--retry",
            "2",
            "--connect-timeout",
            "15",
            "--max-filesize",
        ])
        .arg(size.to_string())
        .arg("-o")
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
    match check_pinned(&tmp, size, sha256) {
        Ok(None) => {}
        Ok(Some(why)) => return Err(fail(why)),
        Err(e) => return Err(fail(e.to_string())),
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    Ok(dest.to_path_buf())
}

/// `None` when `path` has `size` bytes and the SHA-256 `sha256`; else what differs.
fn check_pinned(path: &Path, size: u64, sha256: &str) -> Result<Option<String>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len != size {
        return Ok(Some(format!("{len} bytes, expected {size}")));
    }
    let got = super::load::sha256_file(path)?;
    Ok((got != sha256).then(|| format!("SHA-256 {got}, expected {sha256}")))
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

    /// A cached file is used only while it is the pinned file: another file of the same size
    /// at the cache path is refused with the way out, and nothing is fetched for it.
    #[test]
    fn cached_files_are_checked_against_their_pin_on_every_use() {
        use sha2::Digest;
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("head.pth");
        let good = b"the pinned bytes".to_vec();
        let pin = crate::weights::hex(&sha2::Sha256::digest(&good));
        std::fs::write(&dest, &good).unwrap();
        let url = "http://127.0.0.1:9/never-fetched";
        let n = good.len() as u64;
        assert_eq!(cached_url(&dest, url, n, &pin, "--head").unwrap(), dest);
        let mut swapped = good.clone();
        swapped[0] ^= 1;
        std::fs::write(&dest, &swapped).unwrap();
        let e = cached_url(&dest, url, n, &pin, "--head")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not the pinned file") && e.contains("SHA-256"),
            "{e}"
        );
        assert!(e.contains("delete it") && e.contains("--head"), "{e}");
        std::fs::write(&dest, b"short").unwrap();
        let e = cached_url(&dest, url, n, &pin, "--head")
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 bytes, expected"), "{e}");
    }

    /// A weights file of the Hugging Face cache layout (`snapshots/REV/f` → `blobs/SHA256`)
    /// whose content does not hash to its blob name is refused; the published hash is used.
    #[cfg(unix)]
    #[test]
    fn hub_blobs_must_hash_to_their_published_name() {
        use sha2::Digest;
        let d = tempfile::tempdir().unwrap();
        let blobs = d.path().join("models--org--clip/blobs");
        let snap = d.path().join("models--org--clip/snapshots/abc");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        let t = candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let src = d.path().join("w.safetensors");
        candle_core::safetensors::save(&std::collections::HashMap::from([("x", t)]), &src).unwrap();
        let bytes = std::fs::read(&src).unwrap();
        let right = crate::weights::hex(&sha2::Sha256::digest(&bytes));
        let wrong = "0".repeat(64);
        for (name, ok) in [(&right, true), (&wrong, false)] {
            let blob = blobs.join(name);
            std::fs::write(&blob, &bytes).unwrap();
            let link = snap.join("model.safetensors");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&blob, &link).unwrap();
            assert_eq!(published_sha256(&link).as_deref(), Some(name.as_str()));
            match crate::clip::load::read_file_hashed(&link) {
                Ok((map, sha)) => {
                    assert!(ok, "a blob named {name} was accepted");
                    assert_eq!(sha, right);
                    assert!(map.contains_key("x"));
                }
                Err(e) => {
                    assert!(!ok, "{e}");
                    let e = e.to_string();
                    assert!(e.contains("the hub published") && e.contains(&right), "{e}");
                }
            }
        }
        assert_eq!(published_sha256(&src), None);
    }
}
