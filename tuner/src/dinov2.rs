//! DINOv2 ViT (default: ViT-S/14) as a frozen discriminator [`Backbone`], written for gradients:
//! LayerNorm spelled out (eps 1e-6, as the official model; candle's fused layer norm has no
//! backward), softmax via `ops::softmax` (not the fused `softmax_last_dim`), GELU (erf),
//! LayerScale, and the position embeddings resized with PyTorch's bicubic (A = −0.75,
//! `align_corners=False`) using the official `scale_factor = (n + 0.1)/√N`.
//!
//! Weights load from Hugging Face `facebook/dinov2-*` names (`encoder.layer.N.attention…`, with
//! separate q/k/v, in the hub file's names and transformers 5's `q_proj`/`o_proj`) or the original torch-hub names (`blocks.N.attn.qkv…`). The input is resized
//! to `image_size` (a multiple of the patch) by a differentiable bilinear resize written as two
//! matrix products, and normalised with ImageNet mean/std from [-1, 1].

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};

use crate::backbone::Backbone;
use crate::{Error, Result};

/// Architecture.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dinov2Config {
    /// Patch side.
    pub patch: usize,
    /// Width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    /// LayerNorm epsilon (official: 1e-6).
    pub eps: f64,
    /// Input side after resizing (multiple of `patch`).
    pub image_size: usize,
    /// Blocks whose outputs are returned as features (0-based).
    pub taps: Vec<usize>,
}

impl Dinov2Config {
    /// ViT-S/14 (`facebook/dinov2-small`), features of blocks 3, 6, 9, 12, at 224 px.
    pub fn vits14() -> Self {
        Dinov2Config {
            patch: 14,
            hidden: 384,
            layers: 12,
            heads: 6,
            mlp: 1536,
            eps: 1e-6,
            image_size: 224,
            taps: vec![2, 5, 8, 11],
        }
    }
}

/// The network (frozen).
pub struct Dinov2 {
    cfg: Dinov2Config,
    w: HashMap<String, Tensor>,
}

fn cerr(e: candle_core::Error) -> Error {
    Error::Invalid(format!("dinov2: {e}"))
}

/// Map a Hugging Face name to the original name (None for names this model does not use).
pub fn hf_to_original(name: &str) -> Option<String> {
    let n = name.strip_prefix("dinov2.").unwrap_or(name);
    let direct = match n {
        "embeddings.cls_token" => Some("cls_token"),
        "embeddings.mask_token" => Some("mask_token"),
        "embeddings.position_embeddings" => Some("pos_embed"),
        "embeddings.patch_embeddings.projection.weight" => Some("patch_embed.proj.weight"),
        "embeddings.patch_embeddings.projection.bias" => Some("patch_embed.proj.bias"),
        "layernorm.weight" => Some("norm.weight"),
        "layernorm.bias" => Some("norm.bias"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = n.strip_prefix("encoder.layer.")?;
    let (i, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "norm1.weight" => "norm1.weight",
        "norm1.bias" => "norm1.bias",
        "norm2.weight" => "norm2.weight",
        "norm2.bias" => "norm2.bias",
        "attention.output.dense.weight" => "attn.proj.weight",
        "attention.output.dense.bias" => "attn.proj.bias",
        "layer_scale1.lambda1" => "ls1.gamma",
        "layer_scale2.lambda1" => "ls2.gamma",
        "mlp.fc1.weight" => "mlp.fc1.weight",
        "mlp.fc1.bias" => "mlp.fc1.bias",
        "mlp.fc2.weight" => "mlp.fc2.weight",
        "mlp.fc2.bias" => "mlp.fc2.bias",
        // transformers ≥ 5 state-dict names (the hub file keeps the older names below).
        "attention.o_proj.weight" => "attn.proj.weight",
        "attention.o_proj.bias" => "attn.proj.bias",
        "attention.q_proj.weight" => "attn.q.weight",
        "attention.q_proj.bias" => "attn.q.bias",
        "attention.k_proj.weight" => "attn.k.weight",
        "attention.k_proj.bias" => "attn.k.bias",
        "attention.v_proj.weight" => "attn.v.weight",
        "attention.v_proj.bias" => "attn.v.bias",
        // q/k/v are fused into qkv by the loader.
        "attention.attention.query.weight" => "attn.q.weight",
        "attention.attention.query.bias" => "attn.q.bias",
        "attention.attention.key.weight" => "attn.k.weight",
        "attention.attention.key.bias" => "attn.k.bias",
        "attention.attention.value.weight" => "attn.v.weight",
        "attention.attention.value.bias" => "attn.v.bias",
        _ => return None,
    };
    Some(format!("blocks.{i}.{mapped}"))
}

/// Every tensor a DINOv2 of `cfg` has, in original names, with its shape — except
/// `pos_embed`, whose length depends on the training resolution.
fn tensor_shapes(cfg: &Dinov2Config) -> Vec<(String, Vec<usize>)> {
    let (h, m) = (cfg.hidden, cfg.mlp);
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, h]),
        (
            "patch_embed.proj.weight".into(),
            vec![h, 3, cfg.patch, cfg.patch],
        ),
        ("patch_embed.proj.bias".into(), vec![h]),
        ("norm.weight".into(), vec![h]),
        ("norm.bias".into(), vec![h]),
    ];
    for i in 0..cfg.layers {
        for (n, sh) in [
            ("norm1.weight", vec![h]),
            ("norm1.bias", vec![h]),
            ("attn.qkv.weight", vec![3 * h, h]),
            ("attn.qkv.bias", vec![3 * h]),
            ("attn.proj.weight", vec![h, h]),
            ("attn.proj.bias", vec![h]),
            ("ls1.gamma", vec![h]),
            ("norm2.weight", vec![h]),
            ("norm2.bias", vec![h]),
            ("mlp.fc1.weight", vec![m, h]),
            ("mlp.fc1.bias", vec![m]),
            ("mlp.fc2.weight", vec![h, m]),
            ("mlp.fc2.bias", vec![h]),
            ("ls2.gamma", vec![h]),
        ] {
            out.push((format!("blocks.{i}.{n}"), sh));
        }
    }
    out
}

impl Dinov2 {
    /// Build from tensors with either naming; every tensor the architecture needs is checked by
    /// name and shape.
    pub fn from_tensors(cfg: Dinov2Config, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let hf = tensors.keys().any(|k| k.contains("encoder.layer."));
        let mut w: HashMap<String, Tensor> = HashMap::new();
        for (k, v) in tensors {
            let name = if hf {
                match hf_to_original(&k) {
                    Some(n) => n,
                    None => continue,
                }
            } else {
                k
            };
            // f64 is kept (the gradient tests run in f64); anything else computes in f32.
            let v = if v.dtype() == DType::F64 {
                v
            } else {
                v.to_dtype(DType::F32).map_err(cerr)?
            };
            w.insert(name, v);
        }
        if hf {
            for i in 0..cfg.layers {
                let get = |s: &str| {
                    w.get(&format!("blocks.{i}.attn.{s}"))
                        .cloned()
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "dinov2 weights: missing tensor for block {i} attention {s}"
                            ))
                        })
                };
                let qkv_w = Tensor::cat(&[get("q.weight")?, get("k.weight")?, get("v.weight")?], 0)
                    .map_err(cerr)?;
                let qkv_b = Tensor::cat(&[get("q.bias")?, get("k.bias")?, get("v.bias")?], 0)
                    .map_err(cerr)?;
                w.insert(format!("blocks.{i}.attn.qkv.weight"), qkv_w);
                w.insert(format!("blocks.{i}.attn.qkv.bias"), qkv_b);
            }
        }
        let h = cfg.hidden;
        let need = tensor_shapes(&cfg);
        for (name, shape) in &need {
            match w.get(name) {
                None => {
                    return Err(Error::Invalid(format!(
                        "dinov2 weights: missing tensor `{name}`"
                    )));
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(Error::Invalid(format!(
                        "dinov2 weights: tensor `{name}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    )));
                }
                Some(_) => {}
            }
        }
        let pos = w
            .get("pos_embed")
            .ok_or_else(|| Error::Invalid("dinov2 weights: missing tensor `pos_embed`".into()))?;
        let (one, n, hh) = pos.dims3().map_err(cerr)?;
        let m = ((n - 1) as f64).sqrt() as usize;
        if one != 1 || hh != h || m * m + 1 != n {
            return Err(Error::Invalid(format!(
                "dinov2 weights: `pos_embed` has shape {:?}, expected [1, 1 + M², {h}]",
                pos.dims()
            )));
        }
        Ok(Dinov2 { cfg, w })
    }

    /// Load a Hugging Face `Dinov2Model` folder (`config.json` + `model.safetensors`) or a
    /// safetensors file (its folder's `config.json` when present, else the architecture read
    /// from the tensor shapes with 64-wide heads, as every released DINOv2 has). Features are
    /// taken at 224 px (or the config's smaller image size) from the blocks at each quarter of
    /// the depth.
    pub fn load_hf(path: &std::path::Path, dev: &Device) -> Result<Self> {
        let (file, dir) = if path.is_dir() {
            (path.join("model.safetensors"), path.to_path_buf())
        } else {
            (
                path.to_path_buf(),
                path.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
            )
        };
        let t = candle_core::safetensors::load(&file, dev).map_err(|e| {
            Error::Invalid(format!(
                "cannot load DINOv2 weights {}: {e}",
                file.display()
            ))
        })?;
        let get =
            |k: &str| -> Option<&Tensor> { t.get(k).or_else(|| t.get(&format!("embeddings.{k}"))) };
        let hidden = get("cls_token")
            .and_then(|c| c.dims().last().copied())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no cls_token, not a DINOv2 checkpoint",
                    file.display()
                ))
            })?;
        let patch = get("patch_embeddings.projection.weight")
            .or_else(|| t.get("patch_embed.proj.weight"))
            .map(|w| w.dims()[3])
            .ok_or_else(|| Error::Invalid(format!("{}: no patch embedding", file.display())))?;
        let layers = t
            .keys()
            .filter_map(|k| {
                k.strip_prefix("encoder.layer.")
                    .or_else(|| k.strip_prefix("blocks."))
                    .and_then(|r| r.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
            })
            .max()
            .map_or(0, |m| m + 1);
        let cfg_json: Option<serde_json::Value> = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let field = |k: &str| cfg_json.as_ref().and_then(|c| c[k].as_f64());
        let heads = field("num_attention_heads").map_or(hidden / 64, |v| v as usize);
        let mlp = (hidden as f64 * field("mlp_ratio").unwrap_or(4.0)) as usize;
        let eps = field("layer_norm_eps").unwrap_or(1e-6);
        let image_size = field("image_size").map_or(224, |v| (v as usize).min(224));
        let image_size = image_size / patch * patch;
        let mut taps: Vec<usize> = (1..=4).map(|q| (q * layers / 4).max(1) - 1).collect();
        taps.dedup();
        let cfg = Dinov2Config {
            patch,
            hidden,
            layers,
            heads: heads.max(1),
            mlp,
            eps,
            image_size,
            taps,
        };
        Self::from_tensors(cfg, t.into_iter().collect())
    }

    /// ViT-S/14 with invented weights (LayerNorm 1/0, layer scales 1, other weights uniform
    /// with std 1/√fan_in, from a seeded stream): for timing without downloading weights.
    pub fn random_vits14(seed: u64, dev: &Device) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let cfg = Dinov2Config::vits14();
        let grid = 518 / cfg.patch;
        let mut shapes = tensor_shapes(&cfg);
        // pos_embed's length follows the image size the weights were trained at (518 px).
        shapes.insert(
            1,
            ("pos_embed".into(), vec![1, 1 + grid * grid, cfg.hidden]),
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut t = HashMap::new();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("norm") || name.contains("gamma") {
                vec![1.0; n]
            } else {
                let fan: usize = shape.iter().skip(1).product::<usize>().max(1);
                let a = (3.0 / fan as f32).sqrt();
                (0..n).map(|_| rng.random_range(-a..a)).collect()
            };
            t.insert(name, Tensor::from_vec(data, shape, dev).map_err(cerr)?);
        }
        Self::from_tensors(cfg, t)
    }

    /// Load safetensors (HF or original names).
    pub fn load(cfg: Dinov2Config, path: &std::path::Path, dev: &Device) -> Result<Self> {
        let t = candle_core::safetensors::load(path, dev).map_err(cerr)?;
        Self::from_tensors(cfg, t.into_iter().collect())
    }

    fn t(&self, name: &str) -> &Tensor {
        &self.w[name]
    }

    fn layer_norm(&self, x: &Tensor, p: &str) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.cfg.eps)?.sqrt()?)?;
        xn.broadcast_mul(self.t(&format!("{p}.weight")))?
            .broadcast_add(self.t(&format!("{p}.bias")))
    }

    fn linear(&self, x: &Tensor, p: &str) -> candle_core::Result<Tensor> {
        let w = self.t(&format!("{p}.weight"));
        x.broadcast_matmul(&w.t()?)?
            .broadcast_add(self.t(&format!("{p}.bias")))
    }

    /// Position embeddings for an `n × n` patch grid (official bicubic with the 0.1 offset).
    fn pos_embed(&self, n: usize) -> candle_core::Result<Tensor> {
        let pos = self.t("pos_embed");
        let (_, total, h) = pos.dims3()?;
        let m = ((total - 1) as f64).sqrt() as usize;
        if m == n {
            return Ok(pos.clone());
        }
        let cls = pos.narrow(1, 0, 1)?;
        let grid = pos.narrow(1, 1, m * m)?.reshape((m, m, h))?;
        let scale = (n as f64 + 0.1) / m as f64;
        let r = bicubic_matrix(m, n, scale);
        let r = Tensor::from_vec(r, (n, m), pos.device())?.to_dtype(pos.dtype())?;
        // rows: [n, m] x [m, m*h] ; then columns.
        let g = r.matmul(&grid.reshape((m, m * h))?)?.reshape((n, m, h))?;
        let g = g.transpose(0, 1)?.contiguous()?.reshape((m, n * h))?;
        let g = r
            .matmul(&g)?
            .reshape((n, n, h))?
            .transpose(0, 1)?
            .contiguous()?;
        Tensor::cat(&[cls, g.reshape((1, n * n, h))?], 1)
    }

    /// Token sequences after each block: `[B, 1 + n², hidden]`.
    fn blocks(&self, x: &Tensor) -> candle_core::Result<(Vec<Tensor>, usize)> {
        let c = &self.cfg;
        let (b, _, hh, ww) = x.dims4()?;
        let s = c.image_size;
        // [-1, 1] → ImageNet-normalised, resized to s × s.
        let x = ((x + 1.0)? * 0.5)?;
        let x = if hh != s || ww != s {
            let rh = Tensor::from_vec(bilinear_matrix(hh, s), (s, hh), x.device())?
                .to_dtype(x.dtype())?;
            let rw = Tensor::from_vec(bilinear_matrix(ww, s), (s, ww), x.device())?
                .to_dtype(x.dtype())?;
            rh.broadcast_matmul(&x)?.broadcast_matmul(&rw.t()?)?
        } else {
            x
        };
        let mean = Tensor::from_vec(vec![0.485f32, 0.456, 0.406], (1, 3, 1, 1), x.device())?
            .to_dtype(x.dtype())?;
        let std = Tensor::from_vec(vec![0.229f32, 0.224, 0.225], (1, 3, 1, 1), x.device())?
            .to_dtype(x.dtype())?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let n = s / c.patch;
        let p = x
            .conv2d(self.t("patch_embed.proj.weight"), 0, c.patch, 1, 1)?
            .broadcast_add(
                &self
                    .t("patch_embed.proj.bias")
                    .reshape((1, c.hidden, 1, 1))?,
            )?;
        let p = p.flatten_from(2)?.transpose(1, 2)?; // [B, n², h]
        let cls = self.t("cls_token").broadcast_as((b, 1, c.hidden))?;
        let mut h = Tensor::cat(&[&cls, &p], 1)?.broadcast_add(&self.pos_embed(n)?)?;
        let mut outs = Vec::new();
        let hd = c.hidden / c.heads;
        for i in 0..c.layers {
            let pre = format!("blocks.{i}");
            let y = self.layer_norm(&h, &format!("{pre}.norm1"))?;
            let qkv = self.linear(&y, &format!("{pre}.attn.qkv"))?; // [B, T, 3h]
            let t = qkv.dim(1)?;
            let qkv = qkv
                .reshape((b, t, 3, c.heads, hd))?
                .permute((2, 0, 3, 1, 4))?;
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c.hidden))?;
            let y = self.linear(&y, &format!("{pre}.attn.proj"))?;
            h = (h + y.broadcast_mul(self.t(&format!("{pre}.ls1.gamma")))?)?;
            let y = self.layer_norm(&h, &format!("{pre}.norm2"))?;
            let y = self.linear(&y, &format!("{pre}.mlp.fc1"))?.gelu_erf()?;
            let y = self.linear(&y, &format!("{pre}.mlp.fc2"))?;
            h = (h + y.broadcast_mul(self.t(&format!("{pre}.ls2.gamma")))?)?;
            outs.push(h.clone());
        }
        Ok((outs, n))
    }

    /// The final normalised tokens `[B, 1 + n², hidden]` (what `forward_features` returns).
    pub fn forward_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (outs, _) = self.blocks(x)?;
        self.layer_norm(outs.last().expect("at least one block"), "norm")
    }
}

impl Backbone for Dinov2 {
    fn name(&self) -> &str {
        "dinov2"
    }
    fn channels(&self) -> Vec<usize> {
        vec![self.cfg.hidden; self.cfg.taps.len()]
    }
    fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let (outs, n) = self.blocks(x)?;
        let b = x.dim(0)?;
        self.cfg
            .taps
            .iter()
            .map(|&i| {
                let tokens = outs[i].narrow(1, 1, n * n)?; // drop cls
                tokens.transpose(1, 2)?.reshape((b, self.cfg.hidden, n, n))
            })
            .collect()
    }
}

/// PyTorch bicubic (A = −0.75, `align_corners=False`, border clamp) from `m` to `n` samples
/// with a given scale factor: row-major `[n, m]` weights.
pub fn bicubic_matrix(m: usize, n: usize, scale: f64) -> Vec<f32> {
    let a = -0.75f64;
    let cubic1 = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let cubic2 = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let mut r = vec![0f32; n * m];
    for d in 0..n {
        let src = (d as f64 + 0.5) / scale - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let idx = (i0 as isize - 1 + k as isize).clamp(0, m as isize - 1) as usize;
            r[d * m + idx] += *wk as f32;
        }
    }
    r
}

/// Bilinear (`align_corners=False`, no antialias) from `m` to `n`: `[n, m]` weights.
pub fn bilinear_matrix(m: usize, n: usize) -> Vec<f32> {
    let scale = m as f64 / n as f64;
    let mut r = vec![0f32; n * m];
    for d in 0..n {
        let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(m - 1);
        let i1 = (i0 + 1).min(m - 1);
        let l = src - i0 as f64;
        r[d * m + i0] += (1.0 - l) as f32;
        r[d * m + i1] += l as f32;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn tiny_cfg() -> Dinov2Config {
        Dinov2Config {
            patch: 4,
            hidden: 8,
            layers: 2,
            heads: 2,
            mlp: 16,
            eps: 1e-6,
            image_size: 8,
            taps: vec![0, 1],
        }
    }

    /// Random weights with the original names; the position grid is 3×3 so the 2×2 input
    /// grid needs the bicubic resize.
    fn random(cfg: &Dinov2Config, dtype: DType) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut t = |shape: &[usize], scale: f64| -> Tensor {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * scale)
                .collect();
            Tensor::from_vec(v, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let h = cfg.hidden;
        let mut w = HashMap::new();
        w.insert("cls_token".to_string(), t(&[1, 1, h], 0.5));
        w.insert("pos_embed".to_string(), t(&[1, 10, h], 0.5));
        w.insert(
            "patch_embed.proj.weight".to_string(),
            t(&[h, 3, cfg.patch, cfg.patch], 0.2),
        );
        w.insert("patch_embed.proj.bias".to_string(), t(&[h], 0.1));
        w.insert("norm.weight".to_string(), t(&[h], 1.0));
        w.insert("norm.bias".to_string(), t(&[h], 0.1));
        for i in 0..cfg.layers {
            let b = |s: &str| format!("blocks.{i}.{s}");
            for (n, s, sc) in [
                ("norm1.weight", vec![h], 1.0),
                ("norm1.bias", vec![h], 0.1),
                ("attn.qkv.weight", vec![3 * h, h], 0.4),
                ("attn.qkv.bias", vec![3 * h], 0.1),
                ("attn.proj.weight", vec![h, h], 0.4),
                ("attn.proj.bias", vec![h], 0.1),
                ("ls1.gamma", vec![h], 1.0),
                ("norm2.weight", vec![h], 1.0),
                ("norm2.bias", vec![h], 0.1),
                ("mlp.fc1.weight", vec![cfg.mlp, h], 0.4),
                ("mlp.fc1.bias", vec![cfg.mlp], 0.1),
                ("mlp.fc2.weight", vec![h, cfg.mlp], 0.3),
                ("mlp.fc2.bias", vec![h], 0.1),
                ("ls2.gamma", vec![h], 1.0),
            ] {
                w.insert(b(n), t(&s, sc));
            }
        }
        w
    }

    fn to_hf(w: &HashMap<String, Tensor>, cfg: &Dinov2Config) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        let inv: HashMap<String, String> = [
            ("cls_token", "embeddings.cls_token"),
            ("pos_embed", "embeddings.position_embeddings"),
            (
                "patch_embed.proj.weight",
                "embeddings.patch_embeddings.projection.weight",
            ),
            (
                "patch_embed.proj.bias",
                "embeddings.patch_embeddings.projection.bias",
            ),
            ("norm.weight", "layernorm.weight"),
            ("norm.bias", "layernorm.bias"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for (k, v) in w {
            if let Some(n) = inv.get(k) {
                out.insert(n.clone(), v.clone());
            }
        }
        let h = cfg.hidden;
        for i in 0..cfg.layers {
            let g = |s: &str| w[&format!("blocks.{i}.{s}")].clone();
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let qkv = g("attn.qkv.weight");
            let qkvb = g("attn.qkv.bias");
            for (j, n) in ["query", "key", "value"].iter().enumerate() {
                out.insert(
                    p(&format!("attention.attention.{n}.weight")),
                    qkv.narrow(0, j * h, h).unwrap(),
                );
                out.insert(
                    p(&format!("attention.attention.{n}.bias")),
                    qkvb.narrow(0, j * h, h).unwrap(),
                );
            }
            for (a, b) in [
                ("norm1.weight", "norm1.weight"),
                ("norm1.bias", "norm1.bias"),
                ("norm2.weight", "norm2.weight"),
                ("norm2.bias", "norm2.bias"),
                ("attn.proj.weight", "attention.output.dense.weight"),
                ("attn.proj.bias", "attention.output.dense.bias"),
                ("ls1.gamma", "layer_scale1.lambda1"),
                ("ls2.gamma", "layer_scale2.lambda1"),
                ("mlp.fc1.weight", "mlp.fc1.weight"),
                ("mlp.fc1.bias", "mlp.fc1.bias"),
                ("mlp.fc2.weight", "mlp.fc2.weight"),
                ("mlp.fc2.bias", "mlp.fc2.bias"),
            ] {
                out.insert(p(b), g(a));
            }
        }
        out.insert(
            "embeddings.mask_token".into(),
            Tensor::zeros((1, h), DType::F32, &Device::Cpu).unwrap(),
        );
        out
    }

    fn input(dtype: DType, side: usize) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let v: Vec<f64> = (0..2 * 3 * side * side)
            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, (2, 3, side, side), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn bicubic_position_resize_matches_pytorch() {
        // torch.nn.functional.interpolate(g, scale_factor=((n+0.1)/m,)*2, mode="bicubic",
        // align_corners=False) on g = arange(m*m)**1.5, float64.
        for (m, n, want) in [
            (
                3usize,
                2usize,
                vec![
                    0.9259072210845147,
                    3.4862849642075537,
                    12.356662734918459,
                    18.14090270405433,
                ],
            ),
            (
                5,
                8,
                vec![
                    -1.1209243012907817,
                    -0.8590184533590252,
                    -0.21029045534145513,
                    0.6268599907585728,
                    1.9863248537554312,
                    3.2144717475455886,
                    5.126933003243978,
                    6.41256752683151,
                ],
            ),
        ] {
            let r = bicubic_matrix(m, n, (n as f64 + 0.1) / m as f64);
            let g: Vec<f64> = (0..m * m).map(|i| (i as f64).powf(1.5)).collect();
            // out[y][x] = Σ r[y][i] r[x][j] g[i][j]; compare the first row(s) given.
            for (idx, w) in want.iter().enumerate() {
                let (y, x) = (idx / n, idx % n);
                let mut v = 0.0;
                for i in 0..m {
                    for j in 0..m {
                        v += r[y * m + i] as f64 * r[x * m + j] as f64 * g[i * m + j];
                    }
                }
                assert!(
                    (v - w).abs() < 1e-4 * w.abs().max(1.0),
                    "{m}->{n} [{y},{x}]: {v} vs {w}"
                );
            }
        }
    }

    #[test]
    fn hugging_face_and_original_names_give_the_same_network() {
        let cfg = tiny_cfg();
        let w = random(&cfg, DType::F32);
        let a = Dinov2::from_tensors(cfg.clone(), w.clone()).unwrap();
        let b = Dinov2::from_tensors(cfg.clone(), to_hf(&w, &cfg)).unwrap();
        let x = input(DType::F32, 12);
        let fa = a
            .forward_features(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let fb = b
            .forward_features(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(fa, fb);
        let mut broken = to_hf(&w, &cfg);
        broken.remove("encoder.layer.1.mlp.fc2.bias");
        let e = Dinov2::from_tensors(cfg, broken).err().unwrap().to_string();
        assert!(e.contains("blocks.1.mlp.fc2.bias"), "{e}");
    }

    #[test]
    fn input_gradients_match_finite_differences() {
        let cfg = tiny_cfg();
        let net = Dinov2::from_tensors(cfg, random(&cfg_dtype(), DType::F64)).unwrap();
        // Input 12×12 → resized to 8×8 (the differentiable bilinear), 2×2 patches of 4, the
        // 3×3 position grid resized bicubically.
        let x = input(DType::F64, 12);
        let loss = |x: &Tensor| -> Tensor {
            let f = net.features(x).unwrap();
            let mut acc = (f[0].sqr().unwrap().mean_all().unwrap()
                + f[1].tanh().unwrap().sum_all().unwrap())
            .unwrap();
            acc = (acc
                + net
                    .forward_features(x)
                    .unwrap()
                    .sin()
                    .unwrap()
                    .sum_all()
                    .unwrap())
            .unwrap();
            acc
        };
        let xv = candle_core::Var::from_tensor(&x).unwrap();
        let g = loss(xv.as_tensor()).backward().unwrap();
        let gx = g
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for _ in 0..3 {
            let v: Vec<f64> = (0..gx.len()).map(|_| rng.random::<f64>() - 0.5).collect();
            let vt = Tensor::from_vec(v.clone(), x.dims(), &Device::Cpu).unwrap();
            let h = 1e-5;
            let lp = loss(&(&x + (&vt * h).unwrap()).unwrap())
                .to_scalar::<f64>()
                .unwrap();
            let lm = loss(&(&x - (&vt * h).unwrap()).unwrap())
                .to_scalar::<f64>()
                .unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let ad: f64 = gx.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert!(
                (fd - ad).abs() <= 1e-6 * fd.abs().max(1.0),
                "fd {fd} vs autograd {ad}"
            );
        }
    }

    #[test]
    fn matches_hugging_face_transformers() {
        // tests/data/make_dinov2_tiny.py: a random tiny Dinov2Model and its outputs.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/dinov2_tiny.safetensors");
        let all = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let (test, weights): (HashMap<_, _>, HashMap<_, _>) =
            all.into_iter().partition(|(k, _)| k.starts_with("test."));
        let cfg = Dinov2Config {
            patch: 4,
            hidden: 16,
            layers: 2,
            heads: 2,
            mlp: 64,
            eps: 1e-6,
            image_size: 12,
            taps: vec![0, 1],
        };
        let net = Dinov2::from_tensors(cfg, weights).unwrap();
        let pv = &test["test.pixel_values"];
        // Our input is an image in [-1, 1]; undo the ImageNet normalisation the model applies.
        let mean =
            Tensor::from_vec(vec![0.485f32, 0.456, 0.406], (1, 3, 1, 1), &Device::Cpu).unwrap();
        let std =
            Tensor::from_vec(vec![0.229f32, 0.224, 0.225], (1, 3, 1, 1), &Device::Cpu).unwrap();
        let x = ((pv
            .broadcast_mul(&std)
            .unwrap()
            .broadcast_add(&mean)
            .unwrap()
            * 2.0)
            .unwrap()
            - 1.0)
            .unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            eprintln!("{what}: max |Δ| {d:e}");
            assert!(d < 1e-4, "{what}: {d}");
        };
        close(
            &net.forward_features(&x).unwrap(),
            &test["test.last_hidden_state"],
            "last_hidden_state",
        );
        let feats = net.features(&x).unwrap();
        for (i, f) in feats.iter().enumerate() {
            let h = &test[&format!("test.hidden_states.{}", i + 1)];
            let want = h
                .narrow(1, 1, 9)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((2, 16, 3, 3))
                .unwrap();
            close(f, &want, &format!("block {i}"));
        }
    }

    fn cfg_dtype() -> Dinov2Config {
        tiny_cfg()
    }
}
