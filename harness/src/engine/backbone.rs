//! Where a discriminator backbone's weights are: `dinov2:SOURCE` with SOURCE a local
//! `Dinov2Model` folder or `model.safetensors`, `random` (invented weights, timing only), or a
//! Hugging Face repo id (the cache, downloaded when online).

use std::path::PathBuf;

use anyhow::Context;

/// The DINOv2 the SD-family discriminators use when no backbone is named.
pub const DEFAULT_DINOV2: &str = "facebook/dinov2-small";

/// The default backbone spec of a model plugin: the built-in encoder for `tiny`, DINOv2-S/14
/// for every other model.
pub fn default_for(model: &str) -> String {
    if model == "tiny" {
        "shapes".into()
    } else {
        format!("dinov2:{DEFAULT_DINOV2}")
    }
}

/// The local path of a `dinov2:SOURCE` spec (a repo id is fetched into the Hugging Face cache,
/// or the error names the files and the flag that passes a local copy).
pub fn resolve(spec: &str) -> anyhow::Result<PathBuf> {
    let src = spec
        .strip_prefix("dinov2:")
        .with_context(|| format!("`{spec}` is not a dinov2:SOURCE backbone"))?;
    let p = PathBuf::from(src);
    if src == "random" || p.exists() {
        return Ok(p);
    }
    if !adt_metrics::clip::hub::is_repo_id(src) {
        anyhow::bail!(
            "backbone {spec}: no such file or folder (give a Dinov2Model folder, its \
             model.safetensors, or a Hugging Face repo id such as {DEFAULT_DINOV2})"
        );
    }
    let flag = "--backbone MODEL=dinov2:PATH";
    let config = adt_metrics::clip::hub::repo_file(src, "config.json", flag)?
        .with_context(|| format!("{src} has no config.json: not a transformers Dinov2Model"))?;
    let weights = adt_metrics::clip::hub::repo_file(src, "model.safetensors", flag)?
        .with_context(|| format!("{src} has no model.safetensors"))?;
    // Both files sit in the same snapshot folder.
    let dir = weights
        .parent()
        .filter(|d| d.join("config.json").is_file() || config.parent() == Some(d))
        .map(PathBuf::from)
        .unwrap_or(weights);
    Ok(dir)
}
