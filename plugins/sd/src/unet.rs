//! diffusers' `UNet2DConditionModel` (SD 1.x / 2.x and SDXL), built from its `config.json`.
//!
//! Supported: `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D` / `UpBlock2D`, conv or linear `proj_in`/`proj_out`, per-block heads,
//! cross-attention widths and transformer depths, the SDXL `text_time` add-embedding. Anything
//! else in the config is refused with its name, never silently ignored.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::nn::{
    Conv2d, GroupNorm, LayerNorm, Linear, Vb, attention, merge_heads, split_heads,
    timestep_embedding, upsample2x,
};
use crate::{Error, Result};

/// A value given once or per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same for every block.
    One(usize),
    /// One per down block.
    Each(Vec<usize>),
}

impl PerBlock {
    fn expand(&self, n: usize, what: &str) -> Result<Vec<usize>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::Config(format!(
                "unet: {what} has {} entries for {n} blocks",
                v.len()
            ))),
        }
    }
}

/// The fields of a `UNet2DConditionModel` config the model reads.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Down block kinds.
    pub down_block_types: Vec<String>,
    /// Up block kinds.
    pub up_block_types: Vec<String>,
    /// Mid block kind.
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    /// ResNets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Legacy name: the number of heads when `num_attention_heads` is null.
    #[serde(default)]
    pub attention_head_dim: Option<PerBlock>,
    /// Heads per block.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// Text width per block.
    pub cross_attention_dim: PerBlock,
    /// Transformer blocks per attention.
    #[serde(default = "default_one")]
    pub transformer_layers_per_block: PerBlock,
    /// Linear (true) or 1×1 conv proj_in/out.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// ResNet GroupNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Timestep embedding order.
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    /// Timestep embedding frequency shift.
    #[serde(default)]
    pub freq_shift: f32,
    /// Padding of the down-sampling convs.
    #[serde(default = "default_one_usize")]
    pub downsample_padding: usize,
    /// `text_time` for SDXL.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// SDXL: channels of each time-id embedding.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: input width of the add-embedding MLP.
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "default_one_f")]
    pub mid_block_scale_factor: f64,
    /// Must be null (class-conditional UNets are not supported).
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Must be `default`.
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    /// Must be false.
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    /// Must be false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Must be null.
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    /// Must be null.
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Must be false.
    #[serde(default)]
    pub center_input_sample: bool,
}

fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_one() -> PerBlock {
    PerBlock::One(1)
}
fn default_one_usize() -> usize {
    1
}
fn default_one_f() -> f64 {
    1.0
}
fn default_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_shift() -> String {
    "default".into()
}

impl UNetConfig {
    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("unet: unsupported config: {what}")));
        if self.class_embed_type.is_some() {
            return bad("class_embed_type");
        }
        if self.resnet_time_scale_shift != "default" {
            return bad("resnet_time_scale_shift other than `default`");
        }
        if !(self.only_cross_attention.is_null() || self.only_cross_attention == false) {
            return bad("only_cross_attention");
        }
        if self.dual_cross_attention {
            return bad("dual_cross_attention");
        }
        if self.encoder_hid_dim_type.is_some() {
            return bad("encoder_hid_dim_type");
        }
        if self.time_cond_proj_dim.is_some() {
            return bad("time_cond_proj_dim (LCM-distilled UNets)");
        }
        if self.reverse_transformer_layers_per_block.is_some() {
            return bad("reverse_transformer_layers_per_block");
        }
        if self.center_input_sample {
            return bad("center_input_sample");
        }
        match self.addition_embed_type.as_deref() {
            None | Some("text_time") => {}
            Some(o) => return bad(&format!("addition_embed_type `{o}`")),
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            o => return bad(&format!("mid_block_type {o:?}")),
        }
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::Config(
                "unet: block_out_channels, down_block_types and up_block_types differ in length"
                    .into(),
            ));
        }
        Ok(())
    }
}

pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    scale: f64,
}

impl ResnetBlock {
    pub(crate) fn load(
        vb: &Vb,
        inp: usize,
        out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        scale: f64,
    ) -> Result<Self> {
        Ok(ResnetBlock {
            norm1: GroupNorm::load(&vb.pp("norm1"), groups, inp, eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), inp, out, 3, 1, 1)?,
            temb: match temb {
                Some(t) => Some(Linear::load(&vb.pp("time_emb_proj"), t, out, true)?),
                None => None,
            },
            norm2: GroupNorm::load(&vb.pp("norm2"), groups, out, eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), out, out, 3, 1, 1)?,
            shortcut: if inp != out {
                Some(Conv2d::load(&vb.pp("conv_shortcut"), inp, out, 1, 1, 0)?)
            } else {
                None
            },
            scale,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        if let (Some(p), Some(t)) = (&self.temb, temb) {
            let t = p.forward(&t.silu()?)?;
            h = h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let y = (skip + h)?;
        Ok(if self.scale != 1.0 {
            (y / self.scale)?
        } else {
            y
        })
    }
}

/// diffusers' `Attention` as used in the UNet's transformer blocks (no bias on q/k/v).
struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Attn {
    fn load(vb: &Vb, dim: usize, ctx: usize, heads: usize) -> Result<Self> {
        Ok(Attn {
            q: Linear::load(&vb.pp("to_q"), dim, dim, false)?,
            k: Linear::load(&vb.pp("to_k"), ctx, dim, false)?,
            v: Linear::load(&vb.pp("to_v"), ctx, dim, false)?,
            o: Linear::load(&vb.pp("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<Tensor> {
        let c = ctx.unwrap_or(x);
        let q = split_heads(&self.q.forward(x)?, self.heads)?;
        let k = split_heads(&self.k.forward(c)?, self.heads)?;
        let v = split_heads(&self.v.forward(c)?, self.heads)?;
        self.o.forward(&merge_heads(&attention(&q, &k, &v, None)?)?)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attn,
    norm2: LayerNorm,
    attn2: Attn,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl BasicTransformerBlock {
    fn load(vb: &Vb, dim: usize, ctx: usize, heads: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attn::load(&vb.pp("attn1"), dim, dim, heads)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attn::load(&vb.pp("attn2"), dim, ctx, heads)?,
            norm3: LayerNorm::load(&vb.pp("norm3"), dim, 1e-5)?,
            ff_in: Linear::load(&vb.pp("ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: Linear::load(&vb.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(ctx))? + &x)?;
        // GEGLU: hidden · gelu(gate), exact gelu.
        let h = self.ff_in.forward(&self.norm3.forward(&x)?)?;
        let half = h.dim(2)? / 2;
        let (hid, gate) = (h.narrow(2, 0, half)?, h.narrow(2, half, half)?);
        let h = self.ff_out.forward(&(hid * gate.gelu_erf()?)?)?;
        Ok((h + x)?)
    }
}

enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

struct Transformer2D {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
}

impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: &Vb,
        channels: usize,
        heads: usize,
        depth: usize,
        ctx: usize,
        groups: usize,
        linear: bool,
    ) -> Result<Self> {
        if heads == 0 || !channels.is_multiple_of(heads) {
            return Err(Error::Config(format!(
                "unet: {channels} channels do not split into {heads} heads"
            )));
        }
        let (proj_in, proj_out) = if linear {
            (
                Proj::Linear(Linear::load(&vb.pp("proj_in"), channels, channels, true)?),
                Proj::Linear(Linear::load(&vb.pp("proj_out"), channels, channels, true)?),
            )
        } else {
            (
                Proj::Conv(Conv2d::load(
                    &vb.pp("proj_in"),
                    channels,
                    channels,
                    1,
                    1,
                    0,
                )?),
                Proj::Conv(Conv2d::load(
                    &vb.pp("proj_out"),
                    channels,
                    channels,
                    1,
                    1,
                    0,
                )?),
            )
        };
        let blocks = (0..depth)
            .map(|i| {
                BasicTransformerBlock::load(
                    &vb.pp("transformer_blocks").pp(i),
                    channels,
                    ctx,
                    heads,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Transformer2D {
            norm: GroupNorm::load(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in,
            blocks,
            proj_out,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let to_seq = |t: &Tensor| -> Result<Tensor> {
            Ok(t.permute((0, 2, 3, 1))?
                .contiguous()?
                .reshape((b, h * w, c))?)
        };
        let mut s = match &self.proj_in {
            Proj::Conv(p) => to_seq(&p.forward(&n)?)?,
            Proj::Linear(p) => p.forward(&to_seq(&n)?)?,
        };
        for blk in &self.blocks {
            s = blk.forward(&s, ctx)?;
        }
        let to_img = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?)
        };
        let out = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_img(&s)?)?,
            Proj::Linear(p) => to_img(&p.forward(&s)?)?,
        };
        Ok((out + x)?)
    }
}

struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attns: Vec<Transformer2D>,
    down: Option<Conv2d>,
}

struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attns: Vec<Transformer2D>,
    up: Option<Conv2d>,
}

/// The SDXL add-embedding: pooled text + Fourier features of the six size/crop ids.
struct AddEmbedding {
    time_dim: usize,
    l1: Linear,
    l2: Linear,
}

/// Extra conditioning of SDXL's UNet.
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// Pooled projected text embedding `[B, P]`.
    pub text_embeds: Tensor,
    /// `[B, 6]`: original size, crop top-left, target size.
    pub time_ids: Tensor,
}

/// A `UNet2DConditionModel`.
pub struct UNet {
    cfg: UNetConfig,
    conv_in: Conv2d,
    t1: Linear,
    t2: Linear,
    add: Option<AddEmbedding>,
    down: Vec<DownBlock>,
    mid_res: Vec<ResnetBlock>,
    mid_attn: Transformer2D,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Build from the config and weights.
    pub fn load(vb: &Vb, cfg: &UNetConfig) -> Result<Self> {
        cfg.check()?;
        let n = cfg.block_out_channels.len();
        let ch = &cfg.block_out_channels;
        let heads = match (&cfg.num_attention_heads, &cfg.attention_head_dim) {
            (Some(h), _) | (None, Some(h)) => h.expand(n, "num_attention_heads")?,
            (None, None) => {
                return Err(Error::Config(
                    "unet: neither num_attention_heads nor attention_head_dim given".into(),
                ));
            }
        };
        let ctx = cfg.cross_attention_dim.expand(n, "cross_attention_dim")?;
        let depth = cfg
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb = ch[0] * 4;
        let lin = cfg.use_linear_projection;

        let add = match cfg.addition_embed_type.as_deref() {
            Some("text_time") => {
                let td = cfg.addition_time_embed_dim.ok_or_else(|| {
                    Error::Config("unet: text_time needs addition_time_embed_dim".into())
                })?;
                let inp = cfg.projection_class_embeddings_input_dim.ok_or_else(|| {
                    Error::Config(
                        "unet: text_time needs projection_class_embeddings_input_dim".into(),
                    )
                })?;
                Some(AddEmbedding {
                    time_dim: td,
                    l1: Linear::load(&vb.pp("add_embedding.linear_1"), inp, temb, true)?,
                    l2: Linear::load(&vb.pp("add_embedding.linear_2"), temb, temb, true)?,
                })
            }
            _ => None,
        };

        let mut down = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let inp = out_ch;
            out_ch = ch[i];
            let last = i + 1 == n;
            let cross = match kind.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                o => return Err(Error::Config(format!("unet: unsupported down block `{o}`"))),
            };
            let b = vb.pp("down_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attns = Vec::new();
            for j in 0..cfg.layers_per_block {
                let rin = if j == 0 { inp } else { out_ch };
                resnets.push(ResnetBlock::load(
                    &b.pp("resnets").pp(j),
                    rin,
                    out_ch,
                    Some(temb),
                    g,
                    eps,
                    1.0,
                )?);
                if cross {
                    attns.push(Transformer2D::load(
                        &b.pp("attentions").pp(j),
                        out_ch,
                        heads[i],
                        depth[i],
                        ctx[i],
                        g,
                        lin,
                    )?);
                }
            }
            let d = if last {
                None
            } else {
                Some(Conv2d::load(
                    &b.pp("downsamplers.0.conv"),
                    out_ch,
                    out_ch,
                    3,
                    2,
                    cfg.downsample_padding,
                )?)
            };
            down.push(DownBlock {
                resnets,
                attns,
                down: d,
            });
        }

        let mc = ch[n - 1];
        let mb = vb.pp("mid_block");
        let ms = cfg.mid_block_scale_factor;
        let mid_res = vec![
            ResnetBlock::load(&mb.pp("resnets.0"), mc, mc, Some(temb), g, eps, ms)?,
            ResnetBlock::load(&mb.pp("resnets.1"), mc, mc, Some(temb), g, eps, ms)?,
        ];
        let mid_attn = Transformer2D::load(
            &mb.pp("attentions.0"),
            mc,
            heads[n - 1],
            depth[n - 1],
            ctx[n - 1],
            g,
            lin,
        )?;

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let (rheads, rctx, rdepth): (Vec<_>, Vec<_>, Vec<_>) = (
            heads.iter().rev().copied().collect(),
            ctx.iter().rev().copied().collect(),
            depth.iter().rev().copied().collect(),
        );
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev = out_ch;
            out_ch = rev[i];
            let inp = rev[(i + 1).min(n - 1)];
            let last = i + 1 == n;
            let cross = match kind.as_str() {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                o => return Err(Error::Config(format!("unet: unsupported up block `{o}`"))),
            };
            let b = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attns = Vec::new();
            let l = cfg.layers_per_block + 1;
            for j in 0..l {
                let skip = if j == l - 1 { inp } else { out_ch };
                let rin = if j == 0 { prev } else { out_ch };
                resnets.push(ResnetBlock::load(
                    &b.pp("resnets").pp(j),
                    rin + skip,
                    out_ch,
                    Some(temb),
                    g,
                    eps,
                    1.0,
                )?);
                if cross {
                    attns.push(Transformer2D::load(
                        &b.pp("attentions").pp(j),
                        out_ch,
                        rheads[i],
                        rdepth[i],
                        rctx[i],
                        g,
                        lin,
                    )?);
                }
            }
            let u = if last {
                None
            } else {
                Some(Conv2d::load(
                    &b.pp("upsamplers.0.conv"),
                    out_ch,
                    out_ch,
                    3,
                    1,
                    1,
                )?)
            };
            up.push(UpBlock {
                resnets,
                attns,
                up: u,
            });
        }

        Ok(UNet {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            t1: Linear::load(&vb.pp("time_embedding.linear_1"), ch[0], temb, true)?,
            t2: Linear::load(&vb.pp("time_embedding.linear_2"), temb, temb, true)?,
            add,
            down,
            mid_res,
            mid_attn,
            up,
            norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), g, ch[0], eps)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
            cfg: cfg.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Whether the model needs [`AddedCond`] (SDXL).
    pub fn needs_added_cond(&self) -> bool {
        self.add.is_some()
    }

    /// The model output (ε or v) for latents `x` `[B, C, H, W]` at timesteps `t` (B values),
    /// with text context `ctx` `[B, N, D]`.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &[f32],
        ctx: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let dev: &Device = x.device();
        let dtype = x.dtype();
        let ch0 = self.cfg.block_out_channels[0];
        let tp = timestep_embedding(t, ch0, self.cfg.flip_sin_to_cos, self.cfg.freq_shift, dev)?
            .to_dtype(dtype)?;
        let mut emb = self.t2.forward(&self.t1.forward(&tp)?.silu()?)?;
        match (&self.add, added) {
            (Some(a), Some(c)) => {
                let b = c.time_ids.dim(0)?;
                let ids: Vec<f32> = c
                    .time_ids
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                let te = timestep_embedding(
                    &ids,
                    a.time_dim,
                    self.cfg.flip_sin_to_cos,
                    self.cfg.freq_shift,
                    dev,
                )?
                .reshape((b, ()))?
                .to_dtype(dtype)?;
                let inp = Tensor::cat(&[&c.text_embeds.to_dtype(dtype)?, &te], 1)?;
                let aug = a.l2.forward(&a.l1.forward(&inp)?.silu()?)?;
                emb = (emb + aug)?;
            }
            (Some(_), None) => {
                return Err(Error::Input(
                    "this UNet (text_time) needs pooled text embeddings and time ids".into(),
                ));
            }
            (None, _) => {}
        }

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for blk in &self.down {
            for (j, r) in blk.resnets.iter().enumerate() {
                h = r.forward(&h, Some(&emb))?;
                if let Some(a) = blk.attns.get(j) {
                    h = a.forward(&h, ctx)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &blk.down {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_res[0].forward(&h, Some(&emb))?;
        h = self.mid_attn.forward(&h, ctx)?;
        h = self.mid_res[1].forward(&h, Some(&emb))?;
        for blk in &self.up {
            for (j, r) in blk.resnets.iter().enumerate() {
                let s = skips
                    .pop()
                    .ok_or_else(|| Error::Config("unet: skip connections ran out".into()))?;
                h = r.forward(&Tensor::cat(&[&h, &s], 1)?, Some(&emb))?;
                if let Some(a) = blk.attns.get(j) {
                    h = a.forward(&h, ctx)?;
                }
            }
            if let Some(u) = &blk.up {
                h = u.forward(&upsample2x(&h)?)?;
            }
        }
        let h = self.norm_out.forward(&h)?.silu()?;
        self.conv_out.forward(&h)
    }
}
