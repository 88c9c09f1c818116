//! Reading CLIP checkpoints: transformers `CLIPModel` folders (`config.json` +
//! safetensors / `pytorch_model.bin`) and open_clip checkpoints (their own tensor names:
//! `visual.*`, fused `in_proj_weight`, `x @ W` projections), renamed into transformers'
//! names so one model serves both. A checkpoint of another family is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::Value;

use super::model::{
    Act, ClipConfig, ClipModel, Pool, TextConfig, TowerConfig, VisionConfig, Weights,
};
use candle_core::Tensor;

use crate::weights::read_tensors;
use crate::{Error, Result};

/// Which checkpoint family a tensor set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// transformers `CLIPModel` names (`vision_model.*`, `text_model.*`).
    Transformers,
    /// open_clip names (`visual.*`, `transformer.resblocks.*`).
    OpenClip,
}

impl Family {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Transformers => "a transformers CLIPModel",
            Family::OpenClip => "an open_clip CLIP",
        }
    }
}

/// Guess what a tensor set is, for the "wrong family" messages.
pub fn detect<V>(map: &BTreeMap<String, V>) -> std::result::Result<Family, String> {
    let has = |p: &str| map.keys().any(|k| k.starts_with(p));
    if has("vision_model.") && has("text_model.") {
        return Ok(Family::Transformers);
    }
    if has("visual.") && map.contains_key("token_embedding.weight") {
        return Ok(Family::OpenClip);
    }
    let what = if has("down_blocks.") || has("up_blocks.") {
        "a diffusers UNet / VAE".to_string()
    } else if has("Mixed_") || has("Conv2d_1a_3x3") {
        "the FID Inception network".to_string()
    } else if has("layers.0.") && map.len() <= 12 {
        "an aesthetic-predictor head (give it with --aesthetic-head)".to_string()
    } else if has("vision_model.") {
        "a vision-only model (no text tower)".to_string()
    } else if has("text_model.") {
        "a text-only model (no image tower)".to_string()
    } else {
        let first: Vec<&str> = map.keys().take(3).map(String::as_str).collect();
        format!("an unknown model (first tensors: {})", first.join(", "))
    };
    Err(what)
}

/// Read every tensor of a weights file onto the CPU: safetensors in their stored dtype, a
/// `torch.save` zip (incl. a `state_dict` entry, f16/bf16 storages) as f32; `module.`
/// prefixes are dropped. The towers take these tensors as they are (f32 on the CPU shares the
/// storage) or convert them on their device, so the weights are held once after loading.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    read_file_hashed(path).map(|(map, _)| map)
}

/// [`read_file`] and the file's SHA-256, from the same read for safetensors (a torch zip is
/// hashed in a second, streamed pass).
pub fn read_file_hashed(path: &Path) -> Result<(BTreeMap<String, Tensor>, String)> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let bad = |problem: String| Error::Clip(format!("{}: {problem}", path.display()));
    let (map, sha): (BTreeMap<String, Tensor>, String) = if n == 8 && &head[..4] != b"PK\x03\x04" {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let sha = sha256_hex(&bytes);
        let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect();
        (map, sha)
    } else {
        let raw = read_tensors(path, &head[..n]).map_err(|e| match e.at(path) {
            Error::Weights { problem, .. } => bad(problem),
            e => e,
        })?;
        let map = raw
            .into_iter()
            .map(|(k, r)| Ok((k, Tensor::from_vec(r.data, r.shape, &Device::Cpu)?)))
            .collect::<Result<_>>()?;
        (map, sha256_file(path)?)
    };
    let map = map
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect();
    // A file of the Hugging Face cache carries the hash the hub published: a copy that does
    // not match it is corrupt (or was changed), not weights to score with.
    if let Some(want) = super::hub::published_sha256(path)
        && want != sha
    {
        return Err(bad(format!(
            "its content hashes to {sha}, but the hub published {want} for it; delete it from \
             the Hugging Face cache and download it again"
        )));
    }
    Ok((map, sha))
}

/// SHA-256 (hex) of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::weights::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// SHA-256 (hex) of a file, streamed.
pub(crate) fn sha256_file(p: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::weights::hex(&h.finalize()))
}

/// A JSON file's parsed value and SHA-256, from one read.
fn read_json(p: &Path) -> Result<(Value, String)> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    let v =
        serde_json::from_str(&text).map_err(|e| Error::Clip(format!("{}: {e}", p.display())))?;
    Ok((v, sha256_hex(text.as_bytes())))
}

/// The weight files of a transformers folder: `model.safetensors`, its shards, or
/// `pytorch_model.bin`.
fn hf_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Clip(format!("{}: {e}", index.display())))?;
        let mut files: Vec<String> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        // Shards sit beside the index: a name that climbs out (`..`, absolute) is refused.
        if let Some(f) = files
            .iter()
            .find(|f| !super::hub::stays_inside(Path::new(f.as_str())))
        {
            return Err(Error::Clip(format!(
                "{}: the shard {f:?} is outside the model folder",
                index.display()
            )));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(vec![bin]);
    }
    Err(Error::Clip(format!(
        "{}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
        dir.display()
    )))
}

fn cfg_usize(v: &Value, key: &str, what: &str) -> Result<usize> {
    v[key]
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| Error::Clip(format!("{what}: config lacks `{key}`")))
}

fn hf_act(v: &Value, what: &str) -> Result<Act> {
    match v["hidden_act"].as_str().unwrap_or("quick_gelu") {
        "quick_gelu" => Ok(Act::QuickGelu),
        "gelu" => Ok(Act::Gelu),
        other => Err(Error::Clip(format!(
            "{what}: hidden_act `{other}` is not supported (quick_gelu, gelu)"
        ))),
    }
}

/// Parse a transformers `CLIPModel` `config.json`.
pub fn hf_config(v: &Value, what: &str) -> Result<ClipConfig> {
    match v["model_type"].as_str() {
        Some("clip") | None => {}
        Some(other) => {
            return Err(Error::Clip(format!(
                "{what}: config.json describes a `{other}` model; a CLIPModel (model_type \"clip\") is needed"
            )));
        }
    }
    let (vc, tc) = (&v["vision_config"], &v["text_config"]);
    if !vc.is_object() || !tc.is_object() {
        return Err(Error::Clip(format!(
            "{what}: config.json has no vision_config/text_config (not a CLIPModel)"
        )));
    }
    let tower = |c: &Value| -> Result<TowerConfig> {
        Ok(TowerConfig {
            width: cfg_usize(c, "hidden_size", what)?,
            layers: cfg_usize(c, "num_hidden_layers", what)?,
            heads: cfg_usize(c, "num_attention_heads", what)?,
            mlp: cfg_usize(c, "intermediate_size", what)?,
            act: hf_act(c, what)?,
            eps: c["layer_norm_eps"].as_f64().unwrap_or(1e-5),
        })
    };
    let eos = tc["eos_token_id"].as_u64().unwrap_or(2) as u32;
    Ok(ClipConfig {
        vision: VisionConfig {
            tower: tower(vc)?,
            image_size: cfg_usize(vc, "image_size", what)?,
            patch: cfg_usize(vc, "patch_size", what)?,
        },
        text: TextConfig {
            tower: tower(tc)?,
            vocab: cfg_usize(tc, "vocab_size", what)?,
            context: tc["max_position_embeddings"].as_u64().unwrap_or(77) as usize,
            // transformers: eos_token_id 2 is the legacy configs' marker for argmax pooling.
            pool: if eos == 2 {
                Pool::Argmax
            } else {
                Pool::FirstEos(eos)
            },
        },
        projection_dim: v["projection_dim"].as_u64().unwrap_or(512) as usize,
    })
}

/// Parse an open_clip model config (`{"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}`,
/// or the `model_cfg` of an `open_clip_config.json`), refusing the variants not implemented.
pub fn open_clip_config(v: &Value, what: &str) -> Result<ClipConfig> {
    let v = if v["model_cfg"].is_object() {
        &v["model_cfg"]
    } else {
        v
    };
    let (vc, tc) = (&v["vision_cfg"], &v["text_cfg"]);
    if !vc.is_object() || !tc.is_object() {
        return Err(Error::Clip(format!(
            "{what}: not an open_clip model config (no vision_cfg/text_cfg)"
        )));
    }
    for (c, keys) in [
        (
            vc,
            &[
                "ls_init_value",
                "attentional_pool",
                "timm_model_name",
                "no_ln_pre",
                "final_ln_after_pool",
                "patch_dropout_is_mask",
                "hf_model_name",
            ][..],
        ),
        (
            tc,
            &[
                "hf_model_name",
                "ls_init_value",
                "embed_cls",
                "no_causal_mask",
                "proj_bias",
            ][..],
        ),
    ] {
        for k in keys {
            if !(c[*k].is_null() || c[*k] == Value::Bool(false)) {
                return Err(Error::Clip(format!(
                    "{what}: open_clip option `{k}` is not supported"
                )));
            }
        }
    }
    for (c, key, ok) in [
        (vc, "pool_type", "tok"),
        (tc, "pool_type", "argmax"),
        (vc, "layers", ""),
    ] {
        if !ok.is_empty() && c[key].as_str().is_some_and(|s| s != ok) {
            return Err(Error::Clip(format!(
                "{what}: open_clip {key} `{}` is not supported ({ok})",
                c[key]
            )));
        }
        if ok.is_empty() && !c[key].is_u64() {
            return Err(Error::Clip(format!(
                "{what}: vision_cfg.layers must be an integer (ResNet towers are not supported)"
            )));
        }
    }
    let act = if v["quick_gelu"].as_bool().unwrap_or(false) {
        Act::QuickGelu
    } else {
        Act::Gelu
    };
    let vw = cfg_usize(vc, "width", what)?;
    let head_width = vc["head_width"].as_u64().unwrap_or(64) as usize;
    let mlp_ratio = vc["mlp_ratio"].as_f64().unwrap_or(4.0);
    let tw = cfg_usize(tc, "width", what)?;
    let t_ratio = tc["mlp_ratio"].as_f64().unwrap_or(4.0);
    Ok(ClipConfig {
        vision: VisionConfig {
            tower: TowerConfig {
                width: vw,
                layers: cfg_usize(vc, "layers", what)?,
                heads: vw / head_width.max(1),
                mlp: (vw as f64 * mlp_ratio) as usize,
                act,
                eps: 1e-5,
            },
            image_size: cfg_usize(vc, "image_size", what)?,
            patch: cfg_usize(vc, "patch_size", what)?,
        },
        text: TextConfig {
            tower: TowerConfig {
                width: tw,
                layers: cfg_usize(tc, "layers", what)?,
                heads: cfg_usize(tc, "heads", what)?,
                mlp: (tw as f64 * t_ratio) as usize,
                act,
                eps: 1e-5,
            },
            vocab: tc["vocab_size"].as_u64().unwrap_or(49408) as usize,
            context: tc["context_length"].as_u64().unwrap_or(77) as usize,
            pool: Pool::Argmax,
        },
        projection_dim: cfg_usize(v, "embed_dim", what)?,
    })
}

/// open_clip's `ViT-H-14` (HPSv2's backbone), `ViT-L-14` and `ViT-B-32` configs, for
/// checkpoints that come without one (HPSv2's `.pt` files).
pub const EMBEDDED_OPEN_CLIP: [(&str, &str); 3] = [
    (
        "ViT-H-14",
        r#"{"embed_dim":1024,"vision_cfg":{"image_size":224,"layers":32,"width":1280,"head_width":80,"patch_size":14},"text_cfg":{"context_length":77,"vocab_size":49408,"width":1024,"heads":16,"layers":24}}"#,
    ),
    (
        "ViT-L-14",
        r#"{"embed_dim":768,"vision_cfg":{"image_size":224,"layers":24,"width":1024,"patch_size":14},"text_cfg":{"context_length":77,"vocab_size":49408,"width":768,"heads":12,"layers":12}}"#,
    ),
    (
        "ViT-B-32",
        r#"{"embed_dim":512,"vision_cfg":{"image_size":224,"layers":12,"width":768,"patch_size":32},"text_cfg":{"context_length":77,"vocab_size":49408,"width":512,"heads":8,"layers":12}}"#,
    ),
];

/// Rename open_clip tensors into transformers' names (splitting the fused q/k/v and
/// transposing the `x @ W` projections); unused buffers (`attn_mask`) keep their names and are
/// ignored by the model.
pub fn rename_open_clip(map: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let (tower, rest) = match k.strip_prefix("visual.") {
            Some(r) => ("vision_model", r.to_string()),
            None => ("text_model", k.clone()),
        };
        let name = match rest.as_str() {
            "conv1.weight" => "vision_model.embeddings.patch_embedding.weight".into(),
            "class_embedding" => "vision_model.embeddings.class_embedding".into(),
            "positional_embedding" => format!("{tower}.embeddings.position_embedding.weight"),
            "token_embedding.weight" => "text_model.embeddings.token_embedding.weight".into(),
            "ln_pre.weight" => "vision_model.pre_layrnorm.weight".into(),
            "ln_pre.bias" => "vision_model.pre_layrnorm.bias".into(),
            "ln_post.weight" => "vision_model.post_layernorm.weight".into(),
            "ln_post.bias" => "vision_model.post_layernorm.bias".into(),
            "ln_final.weight" => "text_model.final_layer_norm.weight".into(),
            "ln_final.bias" => "text_model.final_layer_norm.bias".into(),
            "logit_scale" => "logit_scale".into(),
            "proj" if tower == "vision_model" && v.rank() == 2 => {
                out.insert("visual_projection.weight".into(), v.t()?.contiguous()?);
                continue;
            }
            "text_projection" if v.rank() == 2 => {
                out.insert("text_projection.weight".into(), v.t()?.contiguous()?);
                continue;
            }
            r => {
                let Some(blk) = r.strip_prefix("transformer.resblocks.") else {
                    out.insert(k.clone(), v);
                    continue;
                };
                let (i, leaf) = blk.split_once('.').unwrap_or((blk, ""));
                let p = format!("{tower}.encoder.layers.{i}");
                if matches!(leaf, "attn.in_proj_weight" | "attn.in_proj_bias") && v.dim(0)? % 3 == 0
                {
                    let d = v.dim(0)? / 3;
                    let kind = if leaf.ends_with("weight") {
                        "weight"
                    } else {
                        "bias"
                    };
                    for (j, qkv) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        out.insert(
                            format!("{p}.self_attn.{qkv}.{kind}"),
                            v.narrow(0, j * d, d)?.contiguous()?,
                        );
                    }
                    continue;
                }
                let leaf = leaf
                    .replace("attn.out_proj", "self_attn.out_proj")
                    .replace("ln_1", "layer_norm1")
                    .replace("ln_2", "layer_norm2")
                    .replace("mlp.c_fc", "mlp.fc1")
                    .replace("mlp.c_proj", "mlp.fc2");
                format!("{p}.{leaf}")
            }
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// What a loaded CLIP model came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Provenance {
    /// The files read (weights and config), each with its SHA-256.
    pub files: Vec<(PathBuf, String)>,
    /// `transformers` or `open_clip`.
    pub family: &'static str,
}

/// Load a transformers `CLIPModel` folder.
pub fn load_hf(dir: &Path, device: &Device) -> Result<(ClipModel, Provenance)> {
    let what = dir.display().to_string();
    let cfg_path = dir.join("config.json");
    let mut map = BTreeMap::new();
    let mut files = Vec::new();
    for f in hf_weight_files(dir)? {
        let (m, sha) = read_file_hashed(&f)?;
        map.extend(m);
        files.push((f, sha));
    }
    match detect(&map) {
        Ok(Family::Transformers) => {}
        Ok(Family::OpenClip) => {
            return Err(Error::Clip(format!(
                "{what} holds an open_clip checkpoint; this metric needs a transformers CLIPModel folder"
            )));
        }
        Err(found) => {
            return Err(Error::Clip(format!(
                "{what} holds {found}, not a CLIP model; this metric needs a transformers CLIPModel folder"
            )));
        }
    }
    let (v, sha) = read_json(&cfg_path)?;
    let cfg = hf_config(&v, &what)?;
    let model = ClipModel::from_weights(&Weights::new(&map, device, &what), &cfg)?;
    files.push((cfg_path, sha));
    Ok((
        model,
        Provenance {
            files,
            family: "transformers",
        },
    ))
}

/// Load an open_clip checkpoint file. The config is `config` when given, else
/// `open_clip_config.json` beside the file, else the one embedded config whose widths and
/// depths match the tensors.
pub fn load_open_clip(
    file: &Path,
    config: Option<&Path>,
    device: &Device,
) -> Result<(ClipModel, Provenance)> {
    let what = file.display().to_string();
    let (map, sha) = read_file_hashed(file)?;
    match detect(&map) {
        Ok(Family::OpenClip) => {}
        Ok(Family::Transformers) => {
            return Err(Error::Clip(format!(
                "{what} holds a transformers CLIPModel checkpoint; HPSv2 needs an open_clip checkpoint \
                 (`visual.*` tensors, e.g. HPS_v2.1_compressed.pt)"
            )));
        }
        Err(found) => {
            return Err(Error::Clip(format!(
                "{what} holds {found}, not an open_clip CLIP checkpoint"
            )));
        }
    }
    let mut files = vec![(file.to_path_buf(), sha)];
    let beside = file.with_file_name("open_clip_config.json");
    let cfg = match config
        .map(Path::to_path_buf)
        .or_else(|| beside.is_file().then_some(beside))
    {
        Some(p) => {
            let (v, sha) = read_json(&p)?;
            files.push((p, sha));
            open_clip_config(&v, &what)?
        }
        None => {
            let width = map.get("visual.conv1.weight").map_or(0, |t| t.dims()[0]);
            let layers = map
                .keys()
                .filter(|k| {
                    k.starts_with("visual.transformer.resblocks.") && k.ends_with(".ln_1.weight")
                })
                .count();
            let mut found = None;
            for (name, json) in EMBEDDED_OPEN_CLIP {
                let v: Value = serde_json::from_str(json).expect("embedded config is valid JSON");
                let c = open_clip_config(&v, name)?;
                if c.vision.tower.width == width && c.vision.tower.layers == layers {
                    found = Some(c);
                }
            }
            found.ok_or_else(|| {
                Error::Clip(format!(
                    "{what}: no open_clip model config (vision width {width}, {layers} layers); \
                     supply the model's config JSON (open_clip's model_configs/<name>.json) beside it \
                     as open_clip_config.json or with --hps-config"
                ))
            })?
        }
    };
    let renamed = rename_open_clip(map)?;
    let model = ClipModel::from_weights(&Weights::new(&renamed, device, &what), &cfg)?;
    Ok((
        model,
        Provenance {
            files,
            family: "open_clip",
        },
    ))
}

/// A model of `cfg` with invented weights (N(0, 0.02²) tensors, LayerNorm weights near 1,
/// drawn in the order the model asks for them from a ChaCha8 stream seeded by `seed`):
/// throughput needs only the architecture.
pub fn random(cfg: &ClipConfig, seed: u64, device: &Device) -> Result<ClipModel> {
    let empty = BTreeMap::new();
    ClipModel::from_weights(&Weights::invented(&empty, device, seed), cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard index's file names stay beside it.
    #[test]
    fn shards_outside_the_model_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for evil in ["../../../etc/passwd", "/etc/passwd", ""] {
            std::fs::write(
                d.path().join("model.safetensors.index.json"),
                serde_json::json!({"weight_map": {"w": evil}}).to_string(),
            )
            .unwrap();
            let e = hf_weight_files(d.path()).unwrap_err().to_string();
            assert!(e.contains("outside the model folder"), "{evil}: {e}");
        }
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"w": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            hf_weight_files(d.path()).unwrap(),
            [d.path().join("model-00001-of-00002.safetensors")]
        );
    }
}
