//! Reading diffusers pipeline folders: `model_index.json`, each component's `config.json` and
//! safetensors weights (single file, `fp16`/other variants, or sharded with an index).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use crate::nn::Source;
use crate::{Error, Result};

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse a JSON file into `T`, naming the file on error.
pub fn json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Config(format!(
            "{}: invalid JSON for this model: {e}",
            path.display()
        ))
    })
}

/// The weight files of a component folder, in load order: `{stem}.{variant}.safetensors`
/// when a variant is asked for and present, else `{stem}.safetensors`, else the shards named
/// by `{stem}.safetensors.index.json`.
pub fn weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    for stem in ["diffusion_pytorch_model", "model"] {
        let mut names = Vec::new();
        if let Some(v) = variant {
            names.push(format!("{stem}.{v}.safetensors"));
        }
        names.push(format!("{stem}.safetensors"));
        for n in &names {
            let p = dir.join(n);
            if p.is_file() {
                return Ok(vec![p]);
            }
        }
        let mut idx = Vec::new();
        if let Some(v) = variant {
            idx.push(format!("{stem}.safetensors.index.{v}.json"));
            idx.push(format!("{stem}.{v}.safetensors.index.json"));
        }
        idx.push(format!("{stem}.safetensors.index.json"));
        for n in &idx {
            let p = dir.join(n);
            if p.is_file() {
                let index: serde_json::Value = json(&p)?;
                let map = index
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| Error::Pipeline(format!("{}: no weight_map", p.display())))?;
                let mut files: Vec<String> = map
                    .values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                files.sort();
                files.dedup();
                if let Some(f) = files.iter().find(|f| !crate::hub::stays_inside(f)) {
                    return Err(Error::Pipeline(format!(
                        "{}: the shard {f:?} is outside the component folder (a weight_map names \
                         files beside the index)",
                        p.display()
                    )));
                }
                return Ok(files.into_iter().map(|f| dir.join(f)).collect());
            }
        }
    }
    let has_bin = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "bin" || x == "ckpt")
            })
        })
        .unwrap_or(false);
    Err(Error::Pipeline(if has_bin {
        format!(
            "{}: only pickle weights (.bin/.ckpt) found; convert them to safetensors",
            dir.display()
        )
    } else {
        format!("{}: no safetensors weights found", dir.display())
    }))
}

/// Load every tensor of a component folder onto `device` as `dtype`.
pub fn source(
    dir: &Path,
    component: &str,
    variant: Option<&str>,
    dtype: DType,
    device: &Device,
) -> Result<Source> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in weight_files(dir, variant)? {
        // Memory-mapped: the file is not copied into a buffer first.
        let loaded = candle_core::safetensors::load(&f, device).map_err(|e| {
            Error::Pipeline(format!(
                "{}: not a valid safetensors file: {e}",
                f.display()
            ))
        })?;
        for (k, t) in loaded {
            let t = if t.dtype() == dtype {
                t
            } else {
                t.to_dtype(dtype)?
            };
            tensors.insert(k, t);
        }
    }
    Ok(Source::new(component, tensors))
}

/// A component's `config.json`.
pub fn config<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    json(&dir.join("config.json"))
}
