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

/// Whether `rel` names a path inside the folder it is joined to: relative, not empty, every
/// component a plain name (no `..`, `.`, root or drive prefix). Revisions (`@rev`,
/// `refs/main`'s content) and shard names (`weight_map`) come from files and command lines and
/// are checked with it before they are joined to a folder.
pub fn stays_inside(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The repo id and commit of a snapshot folder of the cache layout
/// (`…/models--ORG--NAME/snapshots/COMMIT`), for manifests; `None` for any other folder.
pub fn origin(dir: &Path) -> Option<(String, String)> {
    let commit = dir.file_name()?.to_str()?.to_string();
    let snapshots = dir.parent()?;
    if snapshots.file_name()? != "snapshots" {
        return None;
    }
    let repo = snapshots
        .parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("models--")?;
    Some((repo.replacen("--", "/", 1), commit))
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

/// Whether every use should re-hash cached files in full (`--verify`, which sets
/// `ADT_VERIFY=1`), instead of trusting a recorded hash while size and time are unchanged.
pub fn verify_always() -> bool {
    std::env::var("ADT_VERIFY").is_ok_and(|v| v == "1")
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
    if !stays_inside(&rev) {
        return None;
    }
    let p = root.join("snapshots").join(rev);
    p.is_dir().then_some(p)
}

/// Resolve `weights` to a local pipeline folder: an existing folder as is; `org/name[@rev]`
/// from the Hugging Face cache, downloaded into it when absent (unless `HF_HUB_OFFLINE=1`).
pub fn resolve(weights: &str, variant: Option<&str>) -> Result<PathBuf> {
    let endpoint = std::env::var("HF_ENDPOINT").ok();
    let online = (!offline()).then_some(endpoint.as_deref());
    resolve_in(weights, cache_dir().as_deref(), variant, online)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Which files of a repo a pipeline needs: `model_index.json`, every component's JSON and
/// tokenizer files, and one set of safetensors weights per component (the variant's when it
/// has them); never pickles, ONNX or Flax files.
pub fn wanted_files(files: &[String], variant: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let comp = |f: &str| f.split_once('/').map(|(c, _)| c.to_string());
    let has_variant = |c: &str| {
        variant.is_some_and(|v| {
            files.iter().any(|f| {
                comp(f).as_deref() == Some(c)
                    && (f.ends_with(&format!(".{v}.safetensors"))
                        || f.contains(&format!(".{v}.safetensors.index")))
            })
        })
    };
    for f in files {
        let Some(c) = comp(f) else {
            if f == "model_index.json" {
                out.push(f.clone());
            }
            continue;
        };
        let name = &f[c.len() + 1..];
        if name.contains('/') {
            continue;
        }
        let is_weights = name.ends_with(".safetensors") || name.contains(".safetensors.index");
        let keep = if is_weights {
            let tagged = variant.is_some_and(|v| name.contains(&format!(".{v}.")));
            if has_variant(&c) {
                tagged
            } else {
                !name.split('.').any(|p| p == "fp16" || p == "bf16")
            }
        } else {
            name.ends_with(".json") || name.ends_with(".txt") || name == "spiece.model"
        };
        if keep {
            out.push(f.clone());
        }
    }
    out.sort();
    out
}

/// Download a pipeline repo's needed files into the cache with hf-hub, all at the commit the
/// revision (default `main`) names when it is listed; returns that commit's snapshot folder.
pub fn download(
    repo: &str,
    revision: Option<&str>,
    variant: Option<&str>,
    cache: &Path,
    endpoint: Option<&str>,
) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Pipeline(format!(
            "{repo} is not in the Hugging Face cache ({}) and downloading it failed ({what}: {e}); \
             download it where there is network (`huggingface-cli download {repo}`) or give a local folder",
            cache.display()
        ))
    };
    let mut b = ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf())).with_progress(true);
    if let Some(ep) = endpoint {
        b = b.with_endpoint(ep.to_string());
    }
    let client = b.build().map_err(|e| fail("client", &e))?;
    let at = |rev: &str| {
        hf_hub::Repo::with_revision(repo.into(), hf_hub::RepoType::Model, rev.to_string())
    };
    let branch = revision.unwrap_or("main");
    // The listing names the commit the branch (or tag) points at now; every file is then
    // fetched at that commit, so a branch that moves during the download cannot mix files of
    // two commits, and the snapshot folder (recorded in manifests) is that commit.
    let info = client
        .repo(at(branch))
        .info()
        .map_err(|e| fail("listing the repo", &e))?;
    let commit = info.sha.trim().to_string();
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(
            "listing the repo",
            &format!("the hub answered {commit:?} for the commit, not a commit hash"),
        ));
    }
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if !files.iter().any(|f| f == "model_index.json") {
        return Err(Error::Pipeline(format!(
            "{repo} has no model_index.json: not a diffusers pipeline"
        )));
    }
    let pinned = client.repo(at(&commit));
    let mut index = None;
    for f in wanted_files(&files, variant) {
        if !stays_inside(&f) {
            return Err(fail(&f, &"a file name outside the repo's folder"));
        }
        // The download client is third-party code fed by the network: a panic in it is a
        // failed download, not a crash.
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pinned.get(&f)));
        let p = match got {
            Ok(r) => r.map_err(|e| fail(&f, &e))?,
            Err(_) => return Err(fail(&f, &"the download client failed on the hub's answer")),
        };
        if f == "model_index.json" {
            index = Some(p);
        }
    }
    // Point the branch at the commit, as the hub's own client does, so offline use finds
    // the snapshot by name.
    if branch != commit {
        hf_hub::Cache::new(cache.to_path_buf())
            .repo(at(branch))
            .create_ref(&commit)
            .map_err(|e| fail("recording the revision", &e))?;
    }
    index
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| Error::Pipeline(format!("{repo}: model_index.json did not download")))
}

/// [`resolve`] with an explicit cache folder; `online` is `None` when downloads are off, else
/// the endpoint to use (`None` inside: huggingface.co).
pub fn resolve_in(
    weights: &str,
    cache: Option<&Path>,
    variant: Option<&str>,
    online: Option<Option<&str>>,
) -> Result<PathBuf> {
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
    if !stays_inside(repo) || rev.is_some_and(|r| !stays_inside(r)) {
        return Err(Error::Pipeline(format!(
            "{weights}: a repo id and revision are plain names (`org/name`, `org/name@REVISION`), \
             with no `..`, `.` or absolute parts"
        )));
    }
    if let Some(snap) = cache.and_then(|c| cached_snapshot(c, repo, rev))
        && snap.join("model_index.json").is_file()
    {
        return Ok(snap);
    }
    match cache {
        Some(c) if online.is_some() => download(repo, rev, variant, c, online.flatten()),
        _ => Err(Error::Pipeline(format!(
            "{repo} is not in the Hugging Face cache ({}) and downloads are off (HF_HUB_OFFLINE); \
             fetch it first — `huggingface-cli download {repo} --include 'model_index.json' \
             '*/config.json' '*/*.safetensors' 'tokenizer*/*' 'scheduler/*'` (the pipeline's \
             configs, tokenizer files and one safetensors set per component) — or pass a local \
             diffusers folder with `--weights MODEL=PATH`",
            cache.map_or("no cache folder".into(), |c| c.display().to_string())
        ))),
    }
}
