//! transformers' `T5EncoderModel` (SD3's third text encoder), built from its `config.json`.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::nn::{Act, Linear, RmsNorm, Vb, merge_heads, split_heads};
use crate::{Error, Result};

/// The fields of a T5 `config.json` the encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    /// Embedding rows.
    pub vocab_size: usize,
    /// Width.
    pub d_model: usize,
    /// Per-head width.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Heads.
    pub num_heads: usize,
    /// Relative-position buckets.
    pub relative_attention_num_buckets: usize,
    /// Largest distance bucketed.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gated-gelu` (T5 v1.1, SD3) or `relu`.
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    /// Activation of the feed-forward (`gelu_new` for gated-gelu).
    #[serde(default)]
    pub dense_act_fn: Option<String>,
}

fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}

struct Block {
    ln1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: RmsNorm,
    wi0: Linear,
    wi1: Option<Linear>,
    wo: Linear,
}

/// A T5 encoder.
pub struct T5Encoder {
    cfg: T5Config,
    embed: Tensor,
    rel_bias: Tensor,
    blocks: Vec<Block>,
    final_ln: RmsNorm,
    act: Act,
}

impl T5Encoder {
    /// Build from the config and weights (`shared.weight` or `encoder.embed_tokens.weight`).
    pub fn load(vb: &Vb, cfg: &T5Config) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        let embed_name = if vb.contains("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let embed = vb.get(&[cfg.vocab_size, d], embed_name)?;
        let gated = cfg.feed_forward_proj.starts_with("gated-");
        let act_name = cfg.dense_act_fn.clone().unwrap_or_else(|| {
            cfg.feed_forward_proj
                .trim_start_matches("gated-")
                .to_string()
        });
        let act = Act::parse(if act_name == "gelu" && gated {
            // transformers maps "gated-gelu" to gelu_new.
            "gelu_new"
        } else {
            &act_name
        })?;
        let eps = cfg.layer_norm_epsilon;
        let mut blocks = Vec::new();
        for i in 0..cfg.num_layers {
            let b = vb.pp("encoder.block").pp(i);
            let a = b.pp("layer.0.SelfAttention");
            let f = b.pp("layer.1.DenseReluDense");
            blocks.push(Block {
                ln1: RmsNorm::load(&b.pp("layer.0.layer_norm"), d, eps)?,
                q: Linear::load(&a.pp("q"), d, inner, false)?,
                k: Linear::load(&a.pp("k"), d, inner, false)?,
                v: Linear::load(&a.pp("v"), d, inner, false)?,
                o: Linear::load(&a.pp("o"), inner, d, false)?,
                ln2: RmsNorm::load(&b.pp("layer.1.layer_norm"), d, eps)?,
                wi0: Linear::load(&f.pp(if gated { "wi_0" } else { "wi" }), d, cfg.d_ff, false)?,
                wi1: if gated {
                    Some(Linear::load(&f.pp("wi_1"), d, cfg.d_ff, false)?)
                } else {
                    None
                },
                wo: Linear::load(&f.pp("wo"), cfg.d_ff, d, false)?,
            });
        }
        let rel_bias = vb.get(
            &[cfg.relative_attention_num_buckets, cfg.num_heads],
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        )?;
        Ok(T5Encoder {
            cfg: cfg.clone(),
            embed,
            rel_bias,
            blocks,
            final_ln: RmsNorm::load(&vb.pp("encoder.final_layer_norm"), d, eps)?,
            act,
        })
    }

    /// transformers' bidirectional `_relative_position_bucket`.
    fn bucket(&self, rel: i64) -> usize {
        let nb = self.cfg.relative_attention_num_buckets / 2;
        let mut b = if rel > 0 { nb } else { 0 };
        let r = rel.unsigned_abs() as usize;
        let max_exact = nb / 2;
        if r < max_exact {
            b += r;
        } else {
            let f = (r as f32 / max_exact as f32).ln()
                / (self.cfg.relative_attention_max_distance as f32 / max_exact as f32).ln()
                * (nb - max_exact) as f32;
            b += (max_exact + f as usize).min(nb - 1);
        }
        b
    }

    /// `last_hidden_state` of token ids `[B][N]` (no attention mask: every position is
    /// attended, as SD3 calls it).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let b = ids.len();
        let n = ids.first().map_or(0, Vec::len);
        if b == 0 || n == 0 || ids.iter().any(|r| r.len() != n) {
            return Err(Error::Input(
                "token ids must be a non-empty rectangle".into(),
            ));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Input(format!(
                "token id {bad} is outside the T5 vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let mut x = self
            .embed
            .index_select(&Tensor::from_vec(flat, b * n, device)?, 0)?
            .reshape((b, n, ()))?;
        let buckets: Vec<u32> = (0..n)
            .flat_map(|q| (0..n).map(move |k| (k as i64 - q as i64, ())))
            .map(|(r, ())| self.bucket(r) as u32)
            .collect();
        let bias = self
            .rel_bias
            .index_select(&Tensor::from_vec(buckets, n * n, device)?, 0)?
            .reshape((n, n, self.cfg.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(candle_core::DType::F32)?;
        let h = self.cfg.num_heads;
        for blk in &self.blocks {
            let y = blk.ln1.forward(&x)?;
            let q = split_heads(&blk.q.forward(&y)?, h)?.to_dtype(candle_core::DType::F32)?;
            let k = split_heads(&blk.k.forward(&y)?, h)?.to_dtype(candle_core::DType::F32)?;
            let v = split_heads(&blk.v.forward(&y)?, h)?.to_dtype(candle_core::DType::F32)?;
            // T5 does not scale the scores.
            let s = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(&bias)?;
            let p = candle_nn::ops::softmax(&s, candle_core::D::Minus1)?;
            let a = merge_heads(&p.matmul(&v)?)?.to_dtype(x.dtype())?;
            x = (&x + blk.o.forward(&a)?)?;
            let y = blk.ln2.forward(&x)?;
            let mut hdn = self.act.forward(&blk.wi0.forward(&y)?)?;
            if let Some(w1) = &blk.wi1 {
                hdn = (hdn * w1.forward(&y)?)?;
            }
            x = (&x + blk.wo.forward(&hdn)?)?;
        }
        self.final_ln.forward(&x)
    }
}
