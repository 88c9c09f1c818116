//! diffusers' `SD3Transformer2DModel` (MMDiT), built from its `config.json`, with diffusers'
//! tensor names. Joint attention uses the composite softmax; every LayerNorm is written out.

use candle_core::Tensor;
use serde::Deserialize;

use crate::nn::{
    Act, Conv2d, LayerNorm, Linear, Vb, attention, merge_heads, split_heads, timestep_embedding,
};
use crate::{Error, Result};

/// The fields of an `SD3Transformer2DModel` config the model reads.
#[derive(Debug, Clone, Deserialize)]
pub struct MmditConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Blocks.
    pub num_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Per-head width.
    pub attention_head_dim: usize,
    /// Width of the text sequence.
    pub joint_attention_dim: usize,
    /// Width the text sequence is projected to.
    pub caption_projection_dim: usize,
    /// Width of the pooled text vector.
    pub pooled_projection_dim: usize,
    /// Side of the stored position-embedding grid.
    #[serde(default)]
    pub pos_embed_max_size: Option<usize>,
    /// `rms_norm` in SD3.5 (not supported yet).
    #[serde(default)]
    pub qk_norm: Option<String>,
    /// SD3.5's dual-attention layers (not supported yet).
    #[serde(default)]
    pub dual_attention_layers: Vec<usize>,
}

struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l1.forward(x)?.silu()?)
    }
}

struct FeedForward {
    inp: Linear,
    out: Linear,
}

impl FeedForward {
    fn load(vb: &Vb, dim: usize) -> Result<Self> {
        Ok(FeedForward {
            inp: Linear::load(&vb.pp("net.0.proj"), dim, 4 * dim, true)?,
            out: Linear::load(&vb.pp("net.2"), 4 * dim, dim, true)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out
            .forward(&Act::GeluTanh.forward(&self.inp.forward(x)?)?)
    }
}

/// `x·(1 + scale) + shift` with per-example `[B, C]` modulation.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)?)
}

struct Block {
    norm1: Linear,
    ctx_norm: Linear,
    ctx_pre_only: bool,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    add_q: Linear,
    add_k: Linear,
    add_v: Linear,
    to_out: Linear,
    to_add_out: Option<Linear>,
    ff: FeedForward,
    ff_ctx: Option<FeedForward>,
    heads: usize,
}

impl Block {
    fn load(vb: &Vb, dim: usize, heads: usize, pre_only: bool) -> Result<Self> {
        let a = vb.pp("attn");
        let l = |n: &str| Linear::load(&a.pp(n), dim, dim, true);
        Ok(Block {
            norm1: Linear::load(&vb.pp("norm1.linear"), dim, 6 * dim, true)?,
            ctx_norm: Linear::load(
                &vb.pp("norm1_context.linear"),
                dim,
                if pre_only { 2 } else { 6 } * dim,
                true,
            )?,
            ctx_pre_only: pre_only,
            to_q: l("to_q")?,
            to_k: l("to_k")?,
            to_v: l("to_v")?,
            add_q: l("add_q_proj")?,
            add_k: l("add_k_proj")?,
            add_v: l("add_v_proj")?,
            to_out: l("to_out.0")?,
            to_add_out: if pre_only {
                None
            } else {
                Some(l("to_add_out")?)
            },
            ff: FeedForward::load(&vb.pp("ff"), dim)?,
            ff_ctx: if pre_only {
                None
            } else {
                Some(FeedForward::load(&vb.pp("ff_context"), dim)?)
            },
            heads,
        })
    }

    /// Returns (image stream, context stream or None after a context-pre-only block).
    fn forward(&self, x: &Tensor, ctx: &Tensor, temb: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let ln = LayerNorm::plain(1e-6);
        let e = self.norm1.forward(&temb.silu()?)?.chunk(6, 1)?;
        let xn = modulate(&ln.forward(x)?, &e[0], &e[1])?;
        let ce = self.ctx_norm.forward(&temb.silu()?)?;
        let cn = if self.ctx_pre_only {
            // AdaLayerNormContinuous: (scale, shift).
            let c = ce.chunk(2, 1)?;
            modulate(&ln.forward(ctx)?, &c[1], &c[0])?
        } else {
            let c = ce.chunk(6, 1)?;
            modulate(&ln.forward(ctx)?, &c[0], &c[1])?
        };
        let n_img = x.dim(1)?;
        let h = self.heads;
        let q = Tensor::cat(&[&self.to_q.forward(&xn)?, &self.add_q.forward(&cn)?], 1)?;
        let k = Tensor::cat(&[&self.to_k.forward(&xn)?, &self.add_k.forward(&cn)?], 1)?;
        let v = Tensor::cat(&[&self.to_v.forward(&xn)?, &self.add_v.forward(&cn)?], 1)?;
        let a = merge_heads(&attention(
            &split_heads(&q, h)?,
            &split_heads(&k, h)?,
            &split_heads(&v, h)?,
            None,
        )?)?;
        let n_all = a.dim(1)?;
        let a_img = self.to_out.forward(&a.narrow(1, 0, n_img)?)?;
        let x = (x + a_img.broadcast_mul(&e[2].unsqueeze(1)?)?)?;
        let xn2 = modulate(&ln.forward(&x)?, &e[3], &e[4])?;
        let x = (&x + self.ff.forward(&xn2)?.broadcast_mul(&e[5].unsqueeze(1)?)?)?;
        if self.ctx_pre_only {
            return Ok((x, None));
        }
        let c = ce.chunk(6, 1)?;
        let (out, ff) = match (&self.to_add_out, &self.ff_ctx) {
            (Some(o), Some(f)) => (o, f),
            _ => {
                return Err(Error::Config(
                    "mmdit: context stream without outputs".into(),
                ));
            }
        };
        let a_ctx = out.forward(&a.narrow(1, n_img, n_all - n_img)?)?;
        let ctx = (ctx + a_ctx.broadcast_mul(&c[2].unsqueeze(1)?)?)?;
        let cn2 = modulate(&ln.forward(&ctx)?, &c[3], &c[4])?;
        let ctx = (&ctx + ff.forward(&cn2)?.broadcast_mul(&c[5].unsqueeze(1)?)?)?;
        Ok((x, Some(ctx)))
    }
}

/// An `SD3Transformer2DModel`.
pub struct Mmdit {
    cfg: MmditConfig,
    proj: Conv2d,
    pos: Tensor,
    pos_side: usize,
    t_emb: Mlp,
    text_emb: Mlp,
    ctx_emb: Linear,
    blocks: Vec<Block>,
    norm_out: Linear,
    proj_out: Linear,
}

impl Mmdit {
    /// Build from the config and weights.
    pub fn load(vb: &Vb, cfg: &MmditConfig) -> Result<Self> {
        if cfg.qk_norm.is_some() || !cfg.dual_attention_layers.is_empty() {
            return Err(Error::Config(
                "mmdit: SD3.5 features (qk_norm, dual_attention_layers) are not supported".into(),
            ));
        }
        let dim = cfg.num_attention_heads * cfg.attention_head_dim;
        if cfg.caption_projection_dim != dim {
            return Err(Error::Config(format!(
                "mmdit: caption_projection_dim {} differs from the width {dim}",
                cfg.caption_projection_dim
            )));
        }
        let side = cfg.pos_embed_max_size.ok_or_else(|| {
            Error::Config("mmdit: configs without pos_embed_max_size are not supported".into())
        })?;
        let p = cfg.patch_size;
        let lin = |n: &str, i: usize, o: usize| Linear::load(&vb.pp(n), i, o, true);
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                Block::load(
                    &vb.pp("transformer_blocks").pp(i),
                    dim,
                    cfg.num_attention_heads,
                    i + 1 == cfg.num_layers,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Mmdit {
            proj: Conv2d::load(&vb.pp("pos_embed.proj"), cfg.in_channels, dim, p, p, 0)?,
            pos: vb.get(&[1, side * side, dim], "pos_embed.pos_embed")?,
            pos_side: side,
            t_emb: Mlp {
                l1: lin("time_text_embed.timestep_embedder.linear_1", 256, dim)?,
                l2: lin("time_text_embed.timestep_embedder.linear_2", dim, dim)?,
            },
            text_emb: Mlp {
                l1: lin(
                    "time_text_embed.text_embedder.linear_1",
                    cfg.pooled_projection_dim,
                    dim,
                )?,
                l2: lin("time_text_embed.text_embedder.linear_2", dim, dim)?,
            },
            ctx_emb: lin("context_embedder", cfg.joint_attention_dim, dim)?,
            blocks,
            norm_out: lin("norm_out.linear", dim, 2 * dim)?,
            proj_out: lin("proj_out", dim, p * p * cfg.out_channels)?,
            cfg: cfg.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &MmditConfig {
        &self.cfg
    }

    /// The velocity for latents `x` `[B, C, H, W]` at model times `t` (= 1000·σ), text
    /// sequence `ctx` `[B, N, joint_attention_dim]` and pooled text `pooled` `[B, P]`.
    pub fn forward(&self, x: &Tensor, t: &[f32], ctx: &Tensor, pooled: &Tensor) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let p = self.cfg.patch_size;
        if !hh.is_multiple_of(p) || !ww.is_multiple_of(p) {
            return Err(Error::Input(format!(
                "latent {hh}×{ww} is not a multiple of the patch size {p}"
            )));
        }
        let (h, w) = (hh / p, ww / p);
        if h > self.pos_side || w > self.pos_side {
            return Err(Error::Input(format!(
                "latent grid {h}×{w} exceeds the position embedding's {0}×{0}",
                self.pos_side
            )));
        }
        let dim = self.cfg.num_attention_heads * self.cfg.attention_head_dim;
        let dtype = x.dtype();
        let s = self.proj.forward(x)?.flatten_from(2)?.transpose(1, 2)?;
        let (top, left) = ((self.pos_side - h) / 2, (self.pos_side - w) / 2);
        let pos = self
            .pos
            .reshape((1, self.pos_side, self.pos_side, dim))?
            .narrow(1, top, h)?
            .narrow(2, left, w)?
            .reshape((1, h * w, dim))?;
        let mut s = s.broadcast_add(&pos)?;
        let tp = timestep_embedding(t, 256, true, 0.0, x.device())?.to_dtype(dtype)?;
        let temb = (self.t_emb.forward(&tp)? + self.text_emb.forward(pooled)?)?;
        let mut c = Some(self.ctx_emb.forward(ctx)?);
        for blk in &self.blocks {
            let cc = c.ok_or_else(|| Error::Config("mmdit: context ended early".into()))?;
            let (ns, nc) = blk.forward(&s, &cc, &temb)?;
            s = ns;
            c = nc;
        }
        let e = self.norm_out.forward(&temb.silu()?)?.chunk(2, 1)?;
        let s = modulate(&LayerNorm::plain(1e-6).forward(&s)?, &e[1], &e[0])?;
        let s = self.proj_out.forward(&s)?;
        let co = self.cfg.out_channels;
        Ok(s.reshape((b, h, w, p, p, co))?
            .permute((0, 5, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((b, co, hh, ww))?)
    }
}
