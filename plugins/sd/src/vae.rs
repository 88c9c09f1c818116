//! diffusers' `AutoencoderKL` (SD 1.x, SDXL, SD3), built from its `config.json`.

use candle_core::{D, Tensor};
use serde::Deserialize;

use crate::nn::{Conv2d, GroupNorm, Linear, Vb, attention, upsample2x};
use crate::unet::ResnetBlock;
use crate::{Error, Result};

/// The fields of an `AutoencoderKL` config the model reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    /// Image channels.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Latent channels (4, or 16 for SD3).
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// Pipeline latents are `z · scaling_factor` (after the shift).
    pub scaling_factor: f64,
    /// SD3: pipeline latents are `(z − shift) · scale`.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// 1×1 conv after the encoder.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// 1×1 conv before the decoder.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Attention in the mid blocks.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// Down block kinds (all `DownEncoderBlock2D`).
    #[serde(default)]
    pub down_block_types: Vec<String>,
    /// Up block kinds (all `UpDecoderBlock2D`).
    #[serde(default)]
    pub up_block_types: Vec<String>,
}

fn three() -> usize {
    3
}
fn default_groups() -> usize {
    32
}
fn yes() -> bool {
    true
}

const EPS: f64 = 1e-6;

struct MidAttn {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

impl MidAttn {
    fn load(vb: &Vb, c: usize, groups: usize) -> Result<Self> {
        Ok(MidAttn {
            norm: GroupNorm::load(&vb.pp("group_norm"), groups, c, EPS)?,
            q: Linear::load(&vb.pp("to_q"), c, c, true)?,
            k: Linear::load(&vb.pp("to_k"), c, c, true)?,
            v: Linear::load(&vb.pp("to_v"), c, c, true)?,
            o: Linear::load(&vb.pp("to_out.0"), c, c, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let s = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k, v) = (
            self.q.forward(&s)?.unsqueeze(1)?,
            self.k.forward(&s)?.unsqueeze(1)?,
            self.v.forward(&s)?.unsqueeze(1)?,
        );
        let a = attention(&q, &k, &v, None)?.squeeze(1)?;
        let o = self
            .o
            .forward(&a)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, c, h, w))?;
        Ok((o + x)?)
    }
}

struct Mid {
    r0: ResnetBlock,
    attn: Option<MidAttn>,
    r1: ResnetBlock,
}

impl Mid {
    fn load(vb: &Vb, c: usize, groups: usize, attn: bool) -> Result<Self> {
        Ok(Mid {
            r0: ResnetBlock::load(&vb.pp("resnets.0"), c, c, None, groups, EPS, 1.0)?,
            attn: if attn {
                Some(MidAttn::load(&vb.pp("attentions.0"), c, groups)?)
            } else {
                None
            },
            r1: ResnetBlock::load(&vb.pp("resnets.1"), c, c, None, groups, EPS, 1.0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.r0.forward(x, None)?;
        if let Some(a) = &self.attn {
            h = a.forward(&h)?;
        }
        self.r1.forward(&h, None)
    }
}

/// The encoder half.
pub struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant: Option<Conv2d>,
}

/// The decoder half.
pub struct Decoder {
    post_quant: Option<Conv2d>,
    conv_in: Conv2d,
    mid: Mid,
    blocks: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// An `AutoencoderKL`.
pub struct Vae {
    cfg: VaeConfig,
    /// The encoder (absent when only decoding is needed).
    pub encoder: Encoder,
    /// The decoder.
    pub decoder: Decoder,
}

impl Vae {
    /// Build from the config and weights.
    pub fn load(vb: &Vb, cfg: &VaeConfig) -> Result<Self> {
        for t in &cfg.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(Error::Config(format!("vae: unsupported down block `{t}`")));
            }
        }
        for t in &cfg.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(Error::Config(format!("vae: unsupported up block `{t}`")));
            }
        }
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let lat = cfg.latent_channels;

        let e = vb.pp("encoder");
        let mut blocks = Vec::new();
        let mut out = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let inp = out;
            out = c;
            let b = e.pp("down_blocks").pp(i);
            let res = (0..cfg.layers_per_block)
                .map(|j| {
                    let rin = if j == 0 { inp } else { out };
                    ResnetBlock::load(&b.pp("resnets").pp(j), rin, out, None, g, EPS, 1.0)
                })
                .collect::<Result<Vec<_>>>()?;
            let down = if i + 1 < n {
                Some(Conv2d::load(
                    &b.pp("downsamplers.0.conv"),
                    out,
                    out,
                    3,
                    2,
                    0,
                )?)
            } else {
                None
            };
            blocks.push((res, down));
        }
        let encoder = Encoder {
            conv_in: Conv2d::load(&e.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            blocks,
            mid: Mid::load(
                &e.pp("mid_block"),
                ch[n - 1],
                g,
                cfg.mid_block_add_attention,
            )?,
            norm_out: GroupNorm::load(&e.pp("conv_norm_out"), g, ch[n - 1], EPS)?,
            conv_out: Conv2d::load(&e.pp("conv_out"), ch[n - 1], 2 * lat, 3, 1, 1)?,
            quant: if cfg.use_quant_conv {
                Some(Conv2d::load(
                    &vb.pp("quant_conv"),
                    2 * lat,
                    2 * lat,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
        };

        let d = vb.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut blocks = Vec::new();
        let mut out = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let prev = out;
            out = c;
            let b = d.pp("up_blocks").pp(i);
            let res = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let rin = if j == 0 { prev } else { out };
                    ResnetBlock::load(&b.pp("resnets").pp(j), rin, out, None, g, EPS, 1.0)
                })
                .collect::<Result<Vec<_>>>()?;
            let up = if i + 1 < n {
                Some(Conv2d::load(&b.pp("upsamplers.0.conv"), out, out, 3, 1, 1)?)
            } else {
                None
            };
            blocks.push((res, up));
        }
        let decoder = Decoder {
            post_quant: if cfg.use_post_quant_conv {
                Some(Conv2d::load(&vb.pp("post_quant_conv"), lat, lat, 1, 1, 0)?)
            } else {
                None
            },
            conv_in: Conv2d::load(&d.pp("conv_in"), lat, rev[0], 3, 1, 1)?,
            mid: Mid::load(&d.pp("mid_block"), rev[0], g, cfg.mid_block_add_attention)?,
            blocks,
            norm_out: GroupNorm::load(&d.pp("conv_norm_out"), g, ch[0], EPS)?,
            conv_out: Conv2d::load(&d.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
        };
        Ok(Vae {
            cfg: cfg.clone(),
            encoder,
            decoder,
        })
    }

    /// The config.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// `latent_dist` of images in [-1, 1]: (mean, std), logvar clamped to [-30, 20].
    pub fn encode_dist(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(x)?;
        for (res, down) in &e.blocks {
            for r in res {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = down {
                // diffusers pads (0, 1, 0, 1) before the stride-2 conv.
                h = d.forward(&h.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(
                    D::Minus2,
                    0,
                    1,
                )?)?;
            }
        }
        h = e.mid.forward(&h)?;
        h = e.conv_out.forward(&e.norm_out.forward(&h)?.silu()?)?;
        if let Some(q) = &e.quant {
            h = q.forward(&h)?;
        }
        let lat = self.cfg.latent_channels;
        let mean = h.narrow(1, 0, lat)?;
        let logvar = h.narrow(1, lat, lat)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok((mean, std))
    }

    /// Raw decoder output (nominally [-1, 1]) of decoder-space latents `z`.
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut h = match &d.post_quant {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        h = d.conv_in.forward(&h)?;
        h = d.mid.forward(&h)?;
        for (res, up) in &d.blocks {
            for r in res {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = up {
                h = u.forward(&upsample2x(&h)?)?;
            }
        }
        d.conv_out.forward(&d.norm_out.forward(&h)?.silu()?)
    }

    /// Pipeline-space latents → decoder input: `latents / scale (+ shift)`.
    pub fn to_decoder_space(&self, latents: &Tensor) -> Result<Tensor> {
        let z = (latents / self.cfg.scaling_factor)?;
        Ok(match self.cfg.shift_factor {
            Some(s) => (z + s)?,
            None => z,
        })
    }

    /// Encoder mean → pipeline-space latents: `(mean (− shift)) · scale`.
    pub fn to_pipeline_space(&self, mean: &Tensor) -> Result<Tensor> {
        let m = match self.cfg.shift_factor {
            Some(s) => (mean - s)?,
            None => mean.clone(),
        };
        Ok((m * self.cfg.scaling_factor)?)
    }

    /// Pipeline-space latents → images in [-1, 1] (raw, unclamped).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode_raw(&self.to_decoder_space(latents)?)
    }

    /// Images in [-1, 1] → pipeline-space latents from the distribution's mean.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (mean, _) = self.encode_dist(images)?;
        self.to_pipeline_space(&mean)
    }
}
