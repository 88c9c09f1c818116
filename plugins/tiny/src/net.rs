//! The tiny UNet: pixel space, three resolutions, residual blocks with FiLM conditioning on
//! (time embedding + text embedding), no attention. Every op used has a backward: the
//! stride-1 convolution ([`crate::conv`]: one GEMM per image, backward of the same pieces),
//! GroupNorm written out, SiLU, nearest upsampling and space-to-depth downsampling as
//! reshapes; no fused no-backward candle op is on any path.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::tokenizer::{MAX_TOKENS, VOCAB};

/// Architecture hyper-parameters (stored in the weights file's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TinyConfig {
    /// Image side.
    pub size: usize,
    /// Channels at each resolution (full, /2, /4).
    pub channels: [usize; 3],
    /// Width of the conditioning embedding.
    pub emb: usize,
    /// Width of the token embeddings.
    pub token_dim: usize,
    /// GroupNorm groups.
    pub groups: usize,
}

impl Default for TinyConfig {
    fn default() -> Self {
        TinyConfig {
            size: 32,
            channels: [32, 64, 96],
            emb: 128,
            token_dim: 32,
            groups: 8,
        }
    }
}

/// The trainable parameters, by name, in a fixed order.
pub struct Params {
    /// Name → variable.
    pub vars: BTreeMap<String, Var>,
    /// Whether a forward pass records the autograd graph through the parameters. Off for
    /// gradient-free evaluation (sampling), so no graph is built and activations are freed as
    /// soon as they are used.
    pub track: bool,
}

struct Init<'a> {
    rng: ChaCha8Rng,
    device: &'a Device,
    vars: BTreeMap<String, Var>,
    /// A dry run: count the scalars, allocate nothing. (Widths are bounded by 2²⁰ first, so
    /// no tensor and no sum of them reaches 2¹²⁸.)
    count: Option<u128>,
}

impl Init<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize], std: f64) -> Result<()> {
        if let Some(c) = &mut self.count {
            *c += shape.iter().map(|&d| d as u128).product::<u128>();
            return Ok(());
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if std == 0.0 {
            vec![0.0; n]
        } else {
            let normal =
                Normal::new(0.0, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            (0..n)
                .map(|_| normal.sample(&mut self.rng) as f32)
                .collect()
        };
        let t = Tensor::from_vec(data, shape, self.device)?;
        self.vars.insert(name.to_string(), Var::from_tensor(&t)?);
        Ok(())
    }
    fn ones(&mut self, name: &str, n: usize) -> Result<()> {
        if self.count.is_some() {
            return self.tensor(name, &[n], 1.0);
        }
        let t = Tensor::ones(n, DType::F32, self.device)?;
        self.vars.insert(name.to_string(), Var::from_tensor(&t)?);
        Ok(())
    }
    fn linear(&mut self, name: &str, fin: usize, fout: usize, zero: bool) -> Result<()> {
        let std = if zero { 0.0 } else { (1.0 / fin as f64).sqrt() };
        self.tensor(&format!("{name}.weight"), &[fout, fin], std)?;
        self.tensor(&format!("{name}.bias"), &[fout], 0.0)
    }
    fn conv(&mut self, name: &str, cin: usize, cout: usize, k: usize, zero: bool) -> Result<()> {
        let std = if zero {
            0.0
        } else {
            (2.0 / (cin * k * k) as f64).sqrt()
        };
        self.tensor(&format!("{name}.weight"), &[cout, cin, k, k], std)?;
        self.tensor(&format!("{name}.bias"), &[cout], 0.0)
    }
    fn norm(&mut self, name: &str, c: usize) -> Result<()> {
        self.ones(&format!("{name}.weight"), c)?;
        self.tensor(&format!("{name}.bias"), &[c], 0.0)
    }
    fn resblock(&mut self, name: &str, cin: usize, cout: usize, emb: usize) -> Result<()> {
        self.norm(&format!("{name}.norm1"), cin)?;
        self.conv(&format!("{name}.conv1"), cin, cout, 3, false)?;
        self.linear(&format!("{name}.emb"), emb, 2 * cout, true)?;
        self.norm(&format!("{name}.norm2"), cout)?;
        self.conv(&format!("{name}.conv2"), cout, cout, 3, true)?;
        if cin != cout {
            self.conv(&format!("{name}.skip"), cin, cout, 1, false)?;
        }
        Ok(())
    }
}

/// The blocks of the UNet: (name, in channels, out channels).
fn blocks(cfg: &TinyConfig) -> Vec<(&'static str, usize, usize)> {
    let [c1, c2, c3] = cfg.channels;
    vec![
        ("down0", c1, c1),
        ("down1", c1, c2),
        ("down2", c2, c3),
        ("mid0", c3, c3),
        ("mid1", c3, c3),
        ("up2", c3 + c3, c3),
        ("up1", c3 + c2, c2),
        ("up0", c2 + c1, c1),
    ]
}

impl Params {
    /// Fresh parameters from a seed (deterministic on every machine).
    pub fn init(cfg: &TinyConfig, seed: u64, device: &Device) -> Result<Params> {
        let mut i = Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
            vars: BTreeMap::new(),
            count: None,
        };
        layout(&mut i, cfg)?;
        Ok(Params {
            vars: i.vars,
            track: true,
        })
    }

    /// The number of scalars `cfg` describes, computed without allocating anything (`None`
    /// for a width of 0 or above 2²⁰, or a count above u64): what a weights file's config is checked against before it is
    /// trusted with an allocation.
    pub fn count_for(cfg: &TinyConfig) -> Option<u64> {
        let mut i = Init {
            rng: ChaCha8Rng::seed_from_u64(0),
            device: &Device::Cpu,
            vars: BTreeMap::new(),
            count: Some(0),
        };
        // Every width is bounded first, so no product below overflows.
        let widths = [cfg.size, cfg.emb, cfg.token_dim, cfg.groups];
        if widths
            .iter()
            .chain(&cfg.channels)
            .any(|&v| v == 0 || v > 1 << 20)
        {
            return None;
        }
        layout(&mut i, cfg).ok()?;
        u64::try_from(i.count?).ok()
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        let v = self
            .vars
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name}")))?;
        // `detach` shares the storage, so it always sees the current weights.
        Ok(if self.track {
            v.as_tensor().clone()
        } else {
            v.as_tensor().detach()
        })
    }

    /// Total number of scalars.
    pub fn count(&self) -> u64 {
        self.vars.values().map(|v| v.elem_count() as u64).sum()
    }
}

/// The parameters of `cfg` in creation order: what [`Params::init`] allocates and
/// [`Params::count_for`] counts.
fn layout(i: &mut Init<'_>, cfg: &TinyConfig) -> Result<()> {
    let [c1, c2, c3] = cfg.channels;
    i.tensor("text.tok", &[VOCAB, cfg.token_dim], 1.0)?;
    i.tensor("text.pos", &[MAX_TOKENS, cfg.token_dim], 0.1)?;
    i.linear("text.fc1", MAX_TOKENS * cfg.token_dim, cfg.emb, false)?;
    i.linear("text.fc2", cfg.emb, cfg.emb, false)?;
    i.linear("time.fc1", cfg.emb, cfg.emb, false)?;
    i.linear("time.fc2", cfg.emb, cfg.emb, false)?;
    i.conv("conv_in", 3, c1, 3, false)?;
    for (name, cin, cout) in blocks(cfg) {
        i.resblock(name, cin, cout, cfg.emb)?;
    }
    i.conv("downsample0", 4 * c1, c1, 1, false)?;
    i.conv("downsample1", 4 * c2, c2, 1, false)?;
    i.conv("upsample2", c3, c3, 3, false)?;
    i.conv("upsample1", c2, c2, 3, false)?;
    i.norm("norm_out", c1)?;
    i.conv("conv_out", c1, 3, 3, true)?;
    Ok(())
}

fn linear(p: &Params, name: &str, x: &Tensor) -> Result<Tensor> {
    let w = p.get(&format!("{name}.weight"))?;
    let b = p.get(&format!("{name}.bias"))?;
    x.matmul(&w.t()?)?.broadcast_add(&b)
}

fn conv_raw(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    crate::conv::same_conv(x, w)
}

fn conv(p: &Params, name: &str, x: &Tensor) -> Result<Tensor> {
    let w = p.get(&format!("{name}.weight"))?;
    let b = p.get(&format!("{name}.bias"))?;
    crate::ops::add_channel_bias(&conv_raw(x, &w)?, &b)
}

/// 2× downsampling: space-to-depth (each 2×2 block becomes 4·C channels), then a 1×1 conv
/// whose weight is `[Cout, 4·Cin, 1, 1]`. Reshapes and a permute only, so the backward is exact
/// and cheap.
fn downsample(p: &Params, name: &str, x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let s2d = x
        .reshape((n, c, h / 2, 2, w / 2, 2))?
        .permute((0, 3, 5, 1, 2, 4))?
        .reshape((n, 4 * c, h / 2, w / 2))?;
    conv(p, name, &s2d)
}

/// GroupNorm (eps 1e-5, affine): one op with its own backward on the CPU
/// ([`crate::ops::group_norm`]), the written-out form elsewhere.
pub fn group_norm(p: &Params, name: &str, x: &Tensor, groups: usize) -> Result<Tensor> {
    let wt = p.get(&format!("{name}.weight"))?;
    let bs = p.get(&format!("{name}.bias"))?;
    match crate::ops::group_norm(x, &wt, &bs, groups, 1e-5) {
        Some(y) => y,
        None => group_norm_reference(x, &wt, &bs, groups),
    }
}

/// GroupNorm written with differentiable primitives (eps 1e-5, affine).
pub fn group_norm_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let g = groups.min(c);
    let xg = x.reshape((b, g, (c / g) * h * w))?;
    let mean = xg.mean_keepdim(D::Minus1)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc
        .broadcast_div(&(var + 1e-5)?.sqrt()?)?
        .reshape((b, c, h, w))?;
    let wt = weight.reshape((1, c, 1, 1))?;
    let bs = bias.reshape((1, c, 1, 1))?;
    xn.broadcast_mul(&wt)?.broadcast_add(&bs)
}

fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// 2× nearest upsampling as broadcast + reshape, so its backward is a plain sum.
pub fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

fn resblock(p: &Params, cfg: &TinyConfig, name: &str, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
    let h = silu(&group_norm(p, &format!("{name}.norm1"), x, cfg.groups)?)?;
    let h = conv(p, &format!("{name}.conv1"), &h)?;
    let cout = h.dim(1)?;
    let film = linear(p, &format!("{name}.emb"), &silu(emb)?)?;
    let scale = film.narrow(1, 0, cout)?.unsqueeze(2)?.unsqueeze(3)?;
    let shift = film.narrow(1, cout, cout)?.unsqueeze(2)?.unsqueeze(3)?;
    let h = group_norm(p, &format!("{name}.norm2"), &h, cfg.groups)?;
    let h = h.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
    let h = conv(p, &format!("{name}.conv2"), &silu(&h)?)?;
    let skip = if p.vars.contains_key(&format!("{name}.skip.weight")) {
        conv(p, &format!("{name}.skip"), x)?
    } else {
        x.clone()
    };
    skip + h
}
/// Sinusoidal embedding of model time `t` (`[B]`) to `dim` features.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.unsqueeze(1)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

/// Text embedding of token ids `[B, MAX_TOKENS]` (u32).
pub fn text_embedding(p: &Params, ids: &Tensor) -> Result<Tensor> {
    let b = ids.dim(0)?;
    let tok = p.get("text.tok")?;
    let e = tok
        .embedding(&ids.flatten_all()?)?
        .reshape((b, MAX_TOKENS, ()))?;
    let e = e.broadcast_add(&p.get("text.pos")?.unsqueeze(0)?)?;
    let h = linear(p, "text.fc1", &e.flatten_from(1)?)?;
    linear(p, "text.fc2", &silu(&h)?)
}

/// The denoiser: `x` `[B, 3, S, S]`, `t` `[B]` f32 model time, `text` `[B, emb]` → v̂.
pub fn forward(
    p: &Params,
    cfg: &TinyConfig,
    x: &Tensor,
    t: &Tensor,
    text: &Tensor,
) -> Result<Tensor> {
    let temb = timestep_embedding(t, cfg.emb)?;
    let temb = linear(p, "time.fc2", &silu(&linear(p, "time.fc1", &temb)?)?)?;
    let emb = (temb + text)?;
    let h0 = conv(p, "conv_in", x)?;
    let d0 = resblock(p, cfg, "down0", &h0, &emb)?;
    let h = downsample(p, "downsample0", &d0)?;
    let d1 = resblock(p, cfg, "down1", &h, &emb)?;
    let h = downsample(p, "downsample1", &d1)?;
    let d2 = resblock(p, cfg, "down2", &h, &emb)?;
    let m = resblock(p, cfg, "mid0", &d2, &emb)?;
    let m = resblock(p, cfg, "mid1", &m, &emb)?;
    let u2 = resblock(p, cfg, "up2", &Tensor::cat(&[&m, &d2], 1)?, &emb)?;
    // The upsampling convs run at the low resolution, before the nearest upsampling (4× cheaper).
    let u = upsample2(&conv(p, "upsample2", &u2)?)?;
    let u1 = resblock(p, cfg, "up1", &Tensor::cat(&[&u, &d1], 1)?, &emb)?;
    let u = upsample2(&conv(p, "upsample1", &u1)?)?;
    let u0 = resblock(p, cfg, "up0", &Tensor::cat(&[&u, &d0], 1)?, &emb)?;
    let out = silu(&group_norm(p, "norm_out", &u0, cfg.groups)?)?;
    conv(p, "conv_out", &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let d = Normal::new(0.0f32, 1.0).unwrap();
        Tensor::from_vec(
            (0..n).map(|_| d.sample(&mut rng)).collect::<Vec<f32>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// The dry count is the count of the allocated layout, for the default and a wider
    /// architecture; zero or absurd widths give none.
    #[test]
    fn the_counted_layout_is_the_allocated_one() {
        let wide = TinyConfig {
            channels: [40, 80, 120],
            ..TinyConfig::default()
        };
        for cfg in [TinyConfig::default(), wide] {
            let p = Params::init(&cfg, 0, &Device::Cpu).unwrap();
            assert_eq!(Params::count_for(&cfg), Some(p.count()), "{cfg:?}");
        }
        for channels in [[0, 64, 96], [32, 64, usize::MAX]] {
            let cfg = TinyConfig {
                channels,
                ..TinyConfig::default()
            };
            assert_eq!(Params::count_for(&cfg), None, "{channels:?}");
        }
    }

    /// The custom convolution's forward and backward equal candle's own conv2d (whose
    /// backward is candle's reference implementation) for 3×3, 5×5 and 1×1 kernels, one image
    /// (a parallel product) and several (one image per task), square and oblong images.
    #[test]
    fn same_conv_matches_candle_conv2d_with_gradients() {
        for (k, cin, cout, n, h, wd) in [
            (3usize, 4usize, 5usize, 2usize, 7usize, 7usize),
            (1, 6, 3, 2, 7, 7),
            (3, 7, 9, 1, 5, 8),
            (5, 3, 4, 3, 6, 4),
            (3, 16, 8, 5, 8, 8),
        ] {
            let x = Var::from_tensor(&randn(&[n, cin, h, wd], 1)).unwrap();
            let w = Var::from_tensor(&randn(&[cout, cin, k, k], 2)).unwrap();
            let c = randn(&[n, cout, h, wd], 3);
            let ours = conv_raw(x.as_tensor(), w.as_tensor()).unwrap();
            let theirs = x.as_tensor().conv2d(w.as_tensor(), k / 2, 1, 1, 1).unwrap();
            let diff = (&ours - &theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "forward differs by {diff}");
            let g1 = (ours * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &c)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w] {
                let a = g1
                    .get(v.as_tensor())
                    .expect("gradient reaches the input and the kernel");
                let b = g2.get(v.as_tensor()).unwrap();
                let d = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let scale = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    d < 1e-4 * scale.max(1.0),
                    "k={k}: gradient differs by {d} (scale {scale})"
                );
            }
        }
    }
}
