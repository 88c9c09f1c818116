//! transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`, built from its `config.json`.

use candle_core::{Device, IndexOp, Tensor};
use serde::Deserialize;

use crate::nn::{Act, LayerNorm, Linear, Vb, attention, merge_heads, split_heads};
use crate::{Error, Result};

/// The fields of a CLIP text `config.json` the model reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Context length (77).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI CLIP-L) or `gelu` (OpenCLIP bigG).
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// Width of `text_projection` (WithProjection models).
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// 2 selects the legacy "argmax of ids" pooling.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_ln_eps() -> f64 {
    1e-5
}

fn default_eos() -> u32 {
    2
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What one text-encoder call returns.
pub struct ClipOutput {
    /// `last_hidden_state` (after the final LayerNorm) `[B, N, C]`.
    pub last_hidden: Tensor,
    /// `hidden_states[-2]`: the output of the second-to-last layer, no final LayerNorm.
    pub penultimate: Tensor,
    /// The pooled vector (final LayerNorm'd state at the end token), projected by
    /// `text_projection` when the model has one `[B, P]`.
    pub pooled: Tensor,
}

/// A CLIP text transformer.
pub struct ClipText {
    cfg: ClipTextConfig,
    tok: Tensor,
    pos: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    proj: Option<Linear>,
    act: Act,
}

impl ClipText {
    /// Build from weights with or without the `text_model.` prefix; `with_projection` loads
    /// `text_projection` (CLIPTextModelWithProjection).
    pub fn load(vb: &Vb, cfg: &ClipTextConfig, with_projection: bool) -> Result<Self> {
        let tm = if vb.contains("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        let h = cfg.hidden_size;
        if !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Config(format!(
                "{}: hidden_size {h} is not a multiple of {} heads",
                vb.component(),
                cfg.num_attention_heads
            )));
        }
        let emb = tm.pp("embeddings");
        let tok = emb.get(&[cfg.vocab_size, h], "token_embedding.weight")?;
        let pos = emb.get(
            &[cfg.max_position_embeddings, h],
            "position_embedding.weight",
        )?;
        let eps = cfg.layer_norm_eps;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = tm.pp("encoder.layers").pp(i);
            let a = l.pp("self_attn");
            layers.push(Layer {
                ln1: LayerNorm::load(&l.pp("layer_norm1"), h, eps)?,
                q: Linear::load(&a.pp("q_proj"), h, h, true)?,
                k: Linear::load(&a.pp("k_proj"), h, h, true)?,
                v: Linear::load(&a.pp("v_proj"), h, h, true)?,
                o: Linear::load(&a.pp("out_proj"), h, h, true)?,
                ln2: LayerNorm::load(&l.pp("layer_norm2"), h, eps)?,
                fc1: Linear::load(&l.pp("mlp.fc1"), h, cfg.intermediate_size, true)?,
                fc2: Linear::load(&l.pp("mlp.fc2"), cfg.intermediate_size, h, true)?,
            });
        }
        let final_ln = LayerNorm::load(&tm.pp("final_layer_norm"), h, eps)?;
        let proj = if with_projection {
            let p = cfg.projection_dim.ok_or_else(|| {
                Error::Config(format!("{}: config lacks projection_dim", vb.component()))
            })?;
            Some(Linear::load(&vb.pp("text_projection"), h, p, false)?)
        } else {
            None
        };
        Ok(ClipText {
            act: Act::parse(&cfg.hidden_act)?,
            cfg: cfg.clone(),
            tok,
            pos,
            layers,
            final_ln,
            proj,
        })
    }

    /// The context length.
    pub fn max_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Encode token ids `[B][N]` (N ≤ the context length).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<ClipOutput> {
        let b = ids.len();
        let n = ids.first().map_or(0, Vec::len);
        if b == 0 || n == 0 || n > self.max_len() || ids.iter().any(|r| r.len() != n) {
            return Err(Error::Input(format!(
                "token ids must be a non-empty rectangle of at most {} per row",
                self.max_len()
            )));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let idt = Tensor::from_vec(flat, b * n, device)?;
        let x = self.tok.index_select(&idt, 0)?.reshape((b, n, ()))?;
        let mut x = x.broadcast_add(&self.pos.i(0..n)?)?;
        // Causal mask: position i sees 0..=i.
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, n, n), device)?;
        let heads = self.cfg.num_attention_heads;
        let mut penultimate = None;
        let last = self.layers.len();
        for (li, l) in self.layers.iter().enumerate() {
            if li + 1 == last {
                penultimate = Some(x.clone());
            }
            let h = l.ln1.forward(&x)?;
            let q = split_heads(&l.q.forward(&h)?, heads)?;
            let k = split_heads(&l.k.forward(&h)?, heads)?;
            let v = split_heads(&l.v.forward(&h)?, heads)?;
            let a = merge_heads(&attention(&q, &k, &v, Some(&mask))?)?;
            x = (x + l.o.forward(&a)?)?;
            let h = l.ln2.forward(&x)?;
            let h = l.fc2.forward(&self.act.forward(&l.fc1.forward(&h)?)?)?;
            x = (x + h)?;
        }
        let last_hidden = self.final_ln.forward(&x)?;
        // Pooling: legacy configs (eos_token_id 2) take the argmax of the ids, newer ones the
        // first occurrence of eos_token_id.
        let pos: Vec<u32> = ids
            .iter()
            .map(|r| {
                let p = if self.cfg.eos_token_id == 2 {
                    let m = *r.iter().max().unwrap_or(&0);
                    r.iter().position(|&i| i == m)
                } else {
                    r.iter().position(|&i| i == self.cfg.eos_token_id)
                };
                p.unwrap_or(n - 1) as u32
            })
            .collect();
        let rows: Vec<Tensor> = pos
            .iter()
            .enumerate()
            .map(|(bi, &p)| last_hidden.i((bi, p as usize)))
            .collect::<std::result::Result<_, _>>()?;
        let mut pooled = Tensor::stack(&rows, 0)?;
        if let Some(p) = &self.proj {
            pooled = p.forward(&pooled)?;
        }
        let penultimate = penultimate.unwrap_or_else(|| x.clone());
        Ok(ClipOutput {
            last_hidden,
            penultimate,
            pooled,
        })
    }
}
