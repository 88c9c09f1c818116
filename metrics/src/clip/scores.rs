//! The score definitions of each anchor, on L2-normalised embeddings.
//!
//! * CLIP score (torchmetrics): per pair `100·cos(image_i, prompt_i)`, unclamped; the
//!   metric is `max(mean, 0)` — the clamp applied once, after averaging.
//! * PickScore: `exp(logit_scale)·cos`; the preference probabilities are the softmax of
//!   those logits over the candidate images of one prompt.
//! * LAION aesthetic v2: the 768→1024→128→64→16→1 head (no nonlinearities) on the
//!   normalised image embedding.
//! * HPSv2 / v2.1: `diag(image @ textᵀ)` of the normalised features (raw cosine; its
//!   benchmark tables show 100×).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::load::read_file;
use crate::{Error, Result};

/// `cos` of every (image, prompt) pair: `[images][prompts]`, from normalised rows.
pub fn cosines(images: &Tensor, texts: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(images.matmul(&texts.t()?)?.to_vec2::<f32>()?)
}

/// torchmetrics' per-pair CLIP scores (image i with prompt i): `100·cos`, unclamped.
pub fn clip_score_pairs(images: &Tensor, texts: &Tensor) -> Result<Vec<f64>> {
    let c = cosines(images, texts)?;
    Ok((0..c.len().min(c.first().map_or(0, Vec::len)))
        .map(|i| 100.0 * c[i][i] as f64)
        .collect())
}

/// torchmetrics' CLIP score of a batch: `max(mean(per-pair), 0)`.
pub fn clip_score_metric(per_pair: &[f64]) -> f64 {
    if per_pair.is_empty() {
        return 0.0;
    }
    (per_pair.iter().sum::<f64>() / per_pair.len() as f64).max(0.0)
}

/// PickScore logits `[prompts][images]`: `exp(logit_scale)·cos`.
pub fn pickscore_logits(
    images: &Tensor,
    texts: &Tensor,
    logit_scale: f32,
) -> Result<Vec<Vec<f32>>> {
    let s = logit_scale.exp();
    Ok(texts
        .matmul(&images.t()?)?
        .affine(s as f64, 0.0)?
        .to_vec2::<f32>()?)
}

/// Softmax of one row (the preference probabilities over candidate images).
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// The LAION aesthetic predictor v2 head: five linear layers with no activation between.
pub struct AestheticHead {
    layers: Vec<(Tensor, Tensor)>,
}

/// The head's layer names and shapes (`layers.1/3/5` are dropouts).
pub const AESTHETIC_LAYERS: [(&str, usize, usize); 5] = [
    ("layers.0", 768, 1024),
    ("layers.2", 1024, 128),
    ("layers.4", 128, 64),
    ("layers.6", 64, 16),
    ("layers.7", 16, 1),
];

impl AestheticHead {
    /// Load `sac+logos+ava1-l14-linearMSE.pth` (or the same tensors as safetensors).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let map = read_file(path)?;
        Self::from_tensors(&map, device, &path.display().to_string())
    }

    fn from_tensors(map: &BTreeMap<String, Tensor>, device: &Device, what: &str) -> Result<Self> {
        if map
            .keys()
            .any(|k| k.starts_with("vision_model.") || k.starts_with("visual."))
        {
            return Err(Error::Clip(format!(
                "{what} holds a CLIP model, not the aesthetic head (layers.0 … layers.7); give the \
                 CLIP backbone with --aesthetic-clip and the head with --aesthetic-head"
            )));
        }
        let w = super::model::Weights::new(map, device, what);
        let layers = AESTHETIC_LAYERS
            .iter()
            .map(|(n, i, o)| {
                Ok((
                    w.get(&format!("{n}.weight"), &[*o, *i])?
                        .t()?
                        .contiguous()?,
                    w.get(&format!("{n}.bias"), &[*o])?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(AestheticHead { layers })
    }

    /// Scores of normalised image embeddings `[B, 768]`.
    pub fn forward(&self, normalized: &Tensor) -> Result<Vec<f64>> {
        let mut x = normalized.clone();
        for (wt, b) in &self.layers {
            x = x.matmul(wt)?.broadcast_add(b)?;
        }
        Ok(x.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect())
    }
}

/// HPSv2 per-pair scores: the cosine of image i with prompt i.
pub fn hps_pairs(images: &Tensor, texts: &Tensor) -> Result<Vec<f64>> {
    let c = cosines(images, texts)?;
    Ok((0..c.len().min(c.first().map_or(0, Vec::len)))
        .map(|i| c[i][i] as f64)
        .collect())
}
