//! The CLIP image and text towers (inference only), on candle, in transformers' tensor
//! names; open_clip checkpoints are renamed into them when loaded ([`super::load`]).
//!
//! Both towers are pre-LayerNorm transformers: `x += attn(ln1(x))`, `x += mlp(ln2(x))`.
//! Vision: patch convolution (no bias), class token, learned positions, `pre_layrnorm`, the
//! encoder, `post_layernorm` on the class token, `visual_projection`. Text: token + position
//! embeddings, causal encoder, `final_layer_norm`, the state at the end token,
//! `text_projection`. Nothing here is trained, so candle's fused (no-backward) LayerNorm and
//! softmax are used. On the CPU in f32 the linear layers are faer products with the bias (and
//! `quick_gelu`) applied in the same pass over the output, unmasked attention reads q, k and v
//! in place from the fused projection, and the patch embedding is one product over the
//! patches; other devices run the same layers on candle.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};

use super::tokenize::Tokens;
use crate::{Error, Result};

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// `x·σ(1.702x)` (OpenAI CLIP, `quick_gelu`).
    QuickGelu,
    /// The exact erf GELU (open_clip without `quick_gelu`, `gelu` in transformers).
    Gelu,
}

impl Act {
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Act::Gelu => x.gelu_erf()?,
        })
    }
}

/// How the text tower picks the pooled token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Pool {
    /// The first occurrence of this end-of-text id (transformers with `eos_token_id != 2`).
    FirstEos(u32),
    /// The position of the largest id (open_clip; legacy transformers configs).
    Argmax,
}

/// Widths and depths of one transformer tower.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TowerConfig {
    /// Width.
    pub width: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp: usize,
    /// Activation.
    pub act: Act,
    /// LayerNorm epsilon.
    pub eps: f64,
}

/// The image tower's configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VisionConfig {
    /// The transformer.
    pub tower: TowerConfig,
    /// Input side.
    pub image_size: usize,
    /// Patch side.
    pub patch: usize,
}

/// The text tower's configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextConfig {
    /// The transformer.
    pub tower: TowerConfig,
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length (77).
    pub context: usize,
    /// Pooling rule.
    pub pool: Pool,
}

/// A whole CLIP model's configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipConfig {
    /// Image tower.
    pub vision: VisionConfig,
    /// Text tower.
    pub text: TextConfig,
    /// Joint embedding width.
    pub projection_dim: usize,
}

/// Named tensors of a model being built; every lookup checks the shape, names what is
/// missing, and converts to f32 on the model's device. With `invent`, a missing tensor is
/// drawn instead (N(0, 0.02²); LayerNorm weights 1 + that), for timing without weights.
pub(crate) struct Weights<'a> {
    map: &'a BTreeMap<String, Tensor>,
    device: &'a Device,
    pub(crate) what: &'a str,
    invent: Option<std::cell::RefCell<rand_chacha::ChaCha8Rng>>,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(
        map: &'a BTreeMap<String, Tensor>,
        device: &'a Device,
        what: &'a str,
    ) -> Self {
        Weights {
            map,
            device,
            what,
            invent: None,
        }
    }

    pub(crate) fn invented(
        map: &'a BTreeMap<String, Tensor>,
        device: &'a Device,
        seed: u64,
    ) -> Self {
        use rand::SeedableRng;
        Weights {
            map,
            device,
            what: "invented weights",
            invent: Some(std::cell::RefCell::new(
                rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            )),
        }
    }

    pub(crate) fn device(&self) -> &Device {
        self.device
    }

    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match (self.map.get(name), &self.invent) {
            (Some(t), _) => t.clone(),
            (None, Some(rng)) => {
                use rand_distr::{Distribution, Normal};
                let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
                let norm = name.contains("norm") || name.contains("layrnorm");
                let one = if norm && name.ends_with("weight") {
                    1.0
                } else {
                    0.0
                };
                let mut rng = rng.borrow_mut();
                let n: usize = shape.iter().product();
                let data: Vec<f32> = (0..n).map(|_| one + normal.sample(&mut *rng)).collect();
                Tensor::from_vec(data, shape, &Device::Cpu)?
            }
            (None, None) => {
                return Err(Error::Clip(format!(
                    "{}: the weights lack tensor `{name}` (expected shape {shape:?})",
                    self.what
                )));
            }
        };
        if t.dims() != shape {
            return Err(Error::Clip(format!(
                "{}: tensor `{name}` has shape {:?}, the configuration needs {shape:?}",
                self.what,
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }
}

/// A linear layer with its weight stored transposed (`[in, out]`) for one GEMM per call.
struct Linear {
    wt: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn load(w: &Weights, name: &str, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let wt = w
            .get(&format!("{name}.weight"), &[out, inp])?
            .t()?
            .contiguous()?;
        let b = if bias {
            Some(w.get(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Linear::new(wt, b)
    }

    fn new(wt: Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Linear { wt, b })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }

    /// `act(x·W + b)`, the activation fused into the output pass on the CPU (`quick_gelu`).
    fn forward_act(&self, x: &Tensor, act: Option<Act>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();

        let x = x.reshape((rows, inp))?;
        let fused = act.filter(|a| *a == Act::QuickGelu);
        let y = match cpu_linear(&x, &self.wt, self.b.as_ref(), fused)? {
            Some(y) => match act {
                Some(a) if fused.is_none() => a.forward(&y)?,
                _ => y,
            },
            None => {
                let y = x.matmul(&self.wt)?;
                let y = match &self.b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                match act {
                    Some(a) => a.forward(&y)?,
                    None => y,
                }
            }
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.wt.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

/// The contiguous f32 values of a CPU tensor, or `None` (another device or dtype).
fn cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (st, l) = t.storage_and_layout();
    let candle_core::Storage::Cpu(c) = &*st else {
        return None;
    };
    let (a, b) = l.contiguous_offsets()?;
    let v = c.as_slice::<f32>().ok()?;
    Some(f(&v[a..b]))
}

/// `act(x [rows, inp] · wt [inp, out] + b)` on the CPU in f32: faer's product (its AVX-512
/// kernels, as the Inception path), then one pass over the output for the bias and the fused
/// activation instead of candle's separate broadcast and element-wise ops. `None` off the CPU
/// or for other dtypes.
fn cpu_linear(
    x: &Tensor,
    wt: &Tensor,
    b: Option<&Tensor>,
    act: Option<Act>,
) -> Result<Option<Tensor>> {
    use rayon::prelude::*;
    let (rows, inp) = x.dims2()?;
    let out = wt.dim(1)?;
    let mut y = vec![0f32; rows * out];
    // Row blocks, one per thread, each a sequential product.
    let block = rows.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let done = cpu_f32(x, |xv| {
        cpu_f32(wt, |wv| {
            let rhs = faer::MatRef::from_row_major_slice(wv, inp, out);
            y.par_chunks_mut(block * out)
                .zip(xv.par_chunks(block * inp))
                .for_each(|(yb, xb)| {
                    let r = xb.len() / inp;
                    let lhs = faer::MatRef::from_row_major_slice(xb, r, inp);
                    let mut d = faer::MatMut::from_row_major_slice_mut(yb, r, out);
                    faer::linalg::matmul::matmul(
                        &mut d,
                        faer::Accum::Replace,
                        lhs,
                        rhs,
                        1.0f32,
                        faer::Par::Seq,
                    );
                });
        })
    })
    .flatten();
    if done.is_none() {
        return Ok(None);
    }
    let bias: Option<Vec<f32>> = match b {
        Some(b) => match cpu_f32(b, <[f32]>::to_vec) {
            Some(v) => Some(v),
            None => return Ok(None),
        },
        None => None,
    };
    if bias.is_some() || act.is_some() {
        let gelu = act == Some(Act::QuickGelu);
        y.par_chunks_mut(block * out).for_each(|rows| {
            pulp::Arch::new().dispatch(Epilogue {
                rows,
                out,
                bias: bias.as_deref(),
                gelu,
            })
        });
    }
    Ok(Some(Tensor::from_vec(y, (rows, out), &Device::Cpu)?))
}

/// The bias and the fused activation over `rows` (`[r, out]` row-major), one pass. Run
/// through `pulp::Arch::dispatch`, which compiles it for the widest vector instructions the
/// CPU offers (AVX2 and FMA on x86-64, detected at run time): the crate itself is built for
/// the baseline target (SSE2), so the element-wise loops vectorise twice as wide.
struct Epilogue<'a> {
    rows: &'a mut [f32],
    out: usize,
    bias: Option<&'a [f32]>,
    gelu: bool,
}

impl pulp::WithSimd for Epilogue<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.rows.chunks_exact_mut(self.out) {
            if let Some(bv) = self.bias {
                row.iter_mut().zip(bv).for_each(|(v, b)| *v += b);
            }
            if self.gelu {
                // x·σ(1.702x), σ = 1 / (1 + e^(−z)).
                row.iter_mut()
                    .for_each(|v| *v *= 1.0 / (1.0 + exp_f32(-(*v * 1.702))));
            }
        }
    }
}

/// Row softmax over `rows` (`[r, n]` row-major) as candle's: exp(x − max) / Σ, each step its
/// own loop (the reductions in eight lanes) so that all of them vectorise; dispatched as
/// [`Epilogue`].
struct Softmax<'a> {
    rows: &'a mut [f32],
    n: usize,
}

impl pulp::WithSimd for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.rows.chunks_exact_mut(self.n) {
            let mx = lanes(row, f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|x| *x = exp_f32(*x - mx));
            let sum = lanes(row, 0.0, |a, b| a + b);
            row.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// `eᶻ` in f32 without a libm call, so loops over it vectorise: z = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, Cephes' `expf` polynomial for eʳ, times 2ⁿ built in the exponent bits
/// (the CLIP parity tests hold with it). Inputs are clamped to [−87, 88], so the
/// result stays a normal float (≈ 1.6e-38 … 1.7e38).
#[inline(always)]
fn exp_f32(z: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let z = z.clamp(-87.0, 88.0);
    let n = (z * LOG2E + ROUND) - ROUND;
    let r = z - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// A reduction of `v` in eight independent lanes (combined at the end), which the compiler
/// can keep in vector registers; a single running value would serialise the loop.
#[inline(always)]
fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32 + Copy) -> f32 {
    let mut acc = [init; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = f(*a, *x);
        }
    }
    let mut r = it.remainder().iter().fold(init, |a, &x| f(a, x));
    for a in acc {
        r = f(r, a);
    }
    r
}

/// Unmasked multi-head attention on the CPU from the fused projection `qkv [b, n, 3·d]` (the
/// scale already in q): per image and head, `softmax(Q Kᵀ) V` with Q, K, V read in place
/// (strided rows, no permuted copy) and the result written into its head's columns of
/// `[b, n, d]`. Images spread over the pool. `None` off the CPU.
fn cpu_attention(
    qkv: &Tensor,
    b: usize,
    n: usize,
    heads: usize,
    hd: usize,
) -> Result<Option<Tensor>> {
    use faer::{Accum, MatMut, MatRef, Par};
    use rayon::prelude::*;
    let d = heads * hd;
    let mut out = vec![0f32; b * n * d];
    let done = cpu_f32(qkv, |v| {
        out.par_chunks_mut(n * d).enumerate().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * hd]),
            |(sc, ot), (bi, ob)| {
                let base = &v[bi * n * 3 * d..(bi + 1) * n * 3 * d];
                for h in 0..heads {
                    let m = |off: usize| {
                        MatRef::from_row_major_slice_with_stride(&base[off..], n, hd, 3 * d)
                    };
                    let (q, k, vv) = (m(h * hd), m(d + h * hd), m(2 * d + h * hd));
                    let mut s = MatMut::from_row_major_slice_mut(&mut sc[..], n, n);
                    faer::linalg::matmul::matmul(
                        &mut s,
                        Accum::Replace,
                        q,
                        k.transpose(),
                        1.0f32,
                        Par::Seq,
                    );
                    pulp::Arch::new().dispatch(Softmax {
                        rows: &mut sc[..],
                        n,
                    });
                    let s = MatRef::from_row_major_slice(&sc[..n * n], n, n);
                    // Into a contiguous block, then into the head's columns: faer 0.24's
                    // AVX-512 kernel stores past the end of a strided destination.
                    let mut o = MatMut::from_row_major_slice_mut(&mut ot[..], n, hd);
                    faer::linalg::matmul::matmul(&mut o, Accum::Replace, s, vv, 1.0f32, Par::Seq);
                    for (dst, src) in ob.chunks_exact_mut(d).zip(ot.chunks_exact(hd)) {
                        dst[h * hd..(h + 1) * hd].copy_from_slice(src);
                    }
                }
            },
        )
    });
    if done.is_none() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(out, (b, n, d), &Device::Cpu)?))
}

struct Norm(candle_nn::LayerNorm);

impl Norm {
    fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Norm(candle_nn::LayerNorm::new(
            w.get(&format!("{name}.weight"), &[dim])?,
            w.get(&format!("{name}.bias"), &[dim])?,
            eps,
        )))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(x)?)
    }
}

struct Layer {
    ln1: Norm,
    /// q, k and v in one GEMM (`[d, 3d]`), the attention scale folded into q's columns.
    qkv: Linear,
    o: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The shared pre-LN transformer encoder.
struct Encoder {
    cfg: TowerConfig,
    layers: Vec<Layer>,
}

impl Encoder {
    fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let d = cfg.width;
        if cfg.heads == 0 || !d.is_multiple_of(cfg.heads) {
            return Err(Error::Clip(format!(
                "{}: width {d} is not a multiple of {} heads",
                w.what, cfg.heads
            )));
        }
        let layers = (0..cfg.layers)
            .map(|i| {
                let p = format!("{prefix}.layers.{i}");
                let a = format!("{p}.self_attn");
                let scale = ((d / cfg.heads) as f64).powf(-0.5);
                let q = Linear::load(w, &format!("{a}.q_proj"), d, d, true)?;
                let k = Linear::load(w, &format!("{a}.k_proj"), d, d, true)?;
                let v = Linear::load(w, &format!("{a}.v_proj"), d, d, true)?;
                let bias = |l: &Linear| l.b.clone().expect("loaded with bias");
                let qkv = Linear::new(
                    Tensor::cat(&[&(&q.wt * scale)?, &k.wt, &v.wt], 1)?.contiguous()?,
                    Some(Tensor::cat(
                        &[&(bias(&q) * scale)?, &bias(&k), &bias(&v)],
                        0,
                    )?),
                )?;
                Ok(Layer {
                    ln1: Norm::load(w, &format!("{p}.layer_norm1"), d, cfg.eps)?,
                    qkv,
                    o: Linear::load(w, &format!("{a}.out_proj"), d, d, true)?,
                    ln2: Norm::load(w, &format!("{p}.layer_norm2"), d, cfg.eps)?,
                    fc1: Linear::load(w, &format!("{p}.mlp.fc1"), d, cfg.mlp, true)?,
                    fc2: Linear::load(w, &format!("{p}.mlp.fc2"), cfg.mlp, d, true)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Encoder {
            cfg: cfg.clone(),
            layers,
        })
    }

    fn forward(&self, mut x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let heads = self.cfg.heads;
        let hd = d / heads;
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let qkv = l.qkv.forward(&h)?;
            let fast = match mask {
                None => cpu_attention(&qkv, b, n, heads, hd)?,
                Some(_) => None,
            };
            let a = match fast {
                Some(a) => a,
                None => {
                    // [b, n, 3, heads, hd] → [3, b, heads, n, hd]
                    let qkv = qkv
                        .reshape((b, n, 3, heads, hd))?
                        .permute((2, 0, 3, 1, 4))?
                        .contiguous()?;
                    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
                    let mut att = q.matmul(&k.t()?)?;
                    if let Some(m) = mask {
                        att = att.broadcast_add(m)?;
                    }
                    candle_nn::ops::softmax_last_dim(&att)?
                        .matmul(&v)?
                        .transpose(1, 2)?
                        .contiguous()?
                        .reshape((b, n, d))?
                }
            };
            x = (x + l.o.forward(&a)?)?;
            let h = l.ln2.forward(&x)?;
            let h = l.fc2.forward(&l.fc1.forward_act(&h, Some(self.cfg.act))?)?;
            x = (x + h)?;
        }
        Ok(x)
    }
}

/// What the image tower returns.
pub struct VisionOutput {
    /// The encoder's output (before `post_layernorm`) `[B, 1 + grid², width]`.
    pub last_hidden: Tensor,
    /// `post_layernorm` of the class token `[B, width]`.
    pub pooled: Tensor,
    /// The projected, unnormalised image embedding `[B, projection_dim]`.
    pub embeds: Tensor,
}

/// What the text tower returns.
pub struct TextOutput {
    /// `final_layer_norm` of every token `[B, N, width]`.
    pub last_hidden: Tensor,
    /// The end token's state `[B, width]`.
    pub pooled: Tensor,
    /// The projected, unnormalised text embedding `[B, projection_dim]`.
    pub embeds: Tensor,
}

/// A CLIP model: both towers, the projections and the learned logit scale (log space).
pub struct ClipModel {
    cfg: ClipConfig,
    device: Device,
    /// The patch convolution as a product: `[3·p·p, width]`, rows in (channel, y, x) order.
    patch: Linear,
    class: Tensor,
    vpos: Tensor,
    pre_ln: Norm,
    venc: Encoder,
    post_ln: Norm,
    vproj: Linear,
    tok: Tensor,
    tpos: Tensor,
    tenc: Encoder,
    final_ln: Norm,
    tproj: Linear,
    logit_scale: f32,
}

impl ClipModel {
    /// Build from tensors in transformers' names.
    pub(crate) fn from_weights(w: &Weights, cfg: &ClipConfig) -> Result<Self> {
        let v = &cfg.vision;
        let t = &cfg.text;
        let (vw, tw, p) = (v.tower.width, t.tower.width, cfg.projection_dim);
        if v.patch == 0 || !v.image_size.is_multiple_of(v.patch) {
            return Err(Error::Clip(format!(
                "{}: image size {} is not a multiple of the patch {}",
                w.what, v.image_size, v.patch
            )));
        }
        let grid = v.image_size / v.patch;
        let logit = w.get("logit_scale", &[])?;
        Ok(ClipModel {
            patch: Linear::new(
                w.get(
                    "vision_model.embeddings.patch_embedding.weight",
                    &[vw, 3, v.patch, v.patch],
                )?
                .reshape((vw, 3 * v.patch * v.patch))?
                .t()?
                .contiguous()?,
                None,
            )?,
            class: w.get("vision_model.embeddings.class_embedding", &[vw])?,
            vpos: w.get(
                "vision_model.embeddings.position_embedding.weight",
                &[grid * grid + 1, vw],
            )?,
            pre_ln: Norm::load(w, "vision_model.pre_layrnorm", vw, v.tower.eps)?,
            venc: Encoder::load(w, "vision_model.encoder", &v.tower)?,
            post_ln: Norm::load(w, "vision_model.post_layernorm", vw, v.tower.eps)?,
            vproj: Linear::load(w, "visual_projection", vw, p, false)?,
            tok: w.get(
                "text_model.embeddings.token_embedding.weight",
                &[t.vocab, tw],
            )?,
            tpos: w.get(
                "text_model.embeddings.position_embedding.weight",
                &[t.context, tw],
            )?,
            tenc: Encoder::load(w, "text_model.encoder", &t.tower)?,
            final_ln: Norm::load(w, "text_model.final_layer_norm", tw, t.tower.eps)?,
            tproj: Linear::load(w, "text_projection", tw, p, false)?,
            logit_scale: logit.to_dtype(DType::F32)?.to_scalar::<f32>()?,
            cfg: cfg.clone(),
            device: w.device().clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The learned logit scale, in log space (the model uses `exp` of it).
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Encode processed images: `pixels` holds `B` CHW images of the tower's input size.
    pub fn encode_images(&self, pixels: &[f32], b: usize) -> Result<VisionOutput> {
        let s = self.cfg.vision.image_size;
        if b == 0 || pixels.len() != b * 3 * s * s {
            return Err(Error::Clip(format!(
                "expected {b} image(s) of 3×{s}×{s} values, got {} values",
                pixels.len()
            )));
        }
        let p = self.cfg.vision.patch;
        let g = s / p;
        // The stride-p convolution without overlap is one product over the patches:
        // [B, 3, g, p, g, p] → [B, g, g, 3, p, p] → [B·g², 3·p·p] · [3·p·p, W].
        let x = Tensor::from_slice(pixels, (b, 3, g, p, g, p), &self.device)?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, 3 * p * p))?;
        let x = self.patch.forward(&x)?; // [B, g², W]
        let w = self.cfg.vision.tower.width;
        let cls = self.class.reshape((1, 1, w))?.broadcast_as((b, 1, w))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.vpos)?;
        let x = self.pre_ln.forward(&x.contiguous()?)?;
        let last_hidden = self.venc.forward(x, None)?;
        let pooled = self
            .post_ln
            .forward(&last_hidden.i((.., 0))?.contiguous()?)?;
        let embeds = self.vproj.forward(&pooled)?;
        Ok(VisionOutput {
            last_hidden,
            pooled,
            embeds,
        })
    }

    /// Encode token rows (equal length, at most the context length); padded key positions
    /// are masked when the rows carry their lengths (transformers' attention mask).
    pub fn encode_text(&self, tokens: &Tokens) -> Result<TextOutput> {
        let ids = &tokens.ids;
        let t = &self.cfg.text;
        let b = ids.len();
        let n = ids.first().map_or(0, Vec::len);
        if b == 0 || n == 0 || n > t.context || ids.iter().any(|r| r.len() != n) {
            return Err(Error::Clip(format!(
                "token ids must be a non-empty rectangle of at most {} per row",
                t.context
            )));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&i| i as usize >= t.vocab) {
            return Err(Error::Clip(format!(
                "token id {bad} is outside the vocabulary ({})",
                t.vocab
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let idt = Tensor::from_vec(flat, b * n, &self.device)?;
        let x = self.tok.index_select(&idt, 0)?.reshape((b, n, ()))?;
        let x = x.broadcast_add(&self.tpos.i(0..n)?)?;
        // Causal mask, plus the padding mask per row when given.
        let lens: Vec<usize> = match &tokens.lengths {
            Some(l) if l.len() == b => l.iter().map(|&l| l.clamp(1, n)).collect(),
            _ => vec![n; b],
        };
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&len| {
                (0..n).flat_map(move |i| {
                    (0..n).map(move |j| {
                        if j > i || j >= len {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, n, n), &self.device)?;
        let x = self.tenc.forward(x, Some(&mask))?;
        let last_hidden = self.final_ln.forward(&x)?;
        let rows: Vec<Tensor> = ids
            .iter()
            .enumerate()
            .map(|(bi, r)| {
                let p = match t.pool {
                    Pool::FirstEos(eos) => r.iter().position(|&i| i == eos),
                    Pool::Argmax => {
                        let m = r.iter().copied().max().unwrap_or(0);
                        r.iter().position(|&i| i == m)
                    }
                }
                .unwrap_or(n - 1);
                last_hidden.i((bi, p))
            })
            .collect::<std::result::Result<_, _>>()?;
        let pooled = Tensor::stack(&rows, 0)?;
        let embeds = self.tproj.forward(&pooled)?;
        Ok(TextOutput {
            last_hidden,
            pooled,
            embeds,
        })
    }
}

/// L2-normalise the rows of `[B, D]` (a zero row stays zero).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let n = n.maximum(1e-30)?;
    Ok(x.broadcast_div(&n)?)
}
