//! Differentiable building blocks shared by the SD-family networks, and the named-tensor
//! source they are built from.
//!
//! Every op here has a backward in candle (DESIGN §3): LayerNorm, GroupNorm and RMS norm are
//! written out from elementary ops, attention uses the composite `softmax`, 2× nearest
//! upsampling is a broadcast + reshape (its backward is a sum, not one convolution per
//! channel). Nothing here calls `softmax_last_dim`, the fused `layer_norm` / `rms_norm`, or
//! `LayerNorm::forward`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use candle_core::{D, DType, Device, Tensor};

use crate::{Error, Result};

/// Named tensors of one component (e.g. `unet`), read from its safetensors file(s).
///
/// Lookups check the shape the architecture expects and name the component and the tensor when
/// one is missing or mis-shaped; the names asked for are remembered so that the caller can
/// list what the file had that the architecture did not use.
pub struct Source {
    component: String,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
    /// Random mode: every tensor asked for is made on first use (seed, dtype, device).
    random: Option<(u64, DType, Device)>,
    made: RefCell<HashMap<String, Tensor>>,
}

impl Source {
    /// A source over already loaded tensors.
    pub fn new(component: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        Source {
            component: component.into(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
            random: None,
            made: RefCell::new(HashMap::new()),
        }
    }

    /// A source that invents every tensor the architecture asks for: norm weights 1, biases 0,
    /// other weights uniform with the standard deviation 1/√fan_in, drawn from a stream seeded
    /// by `seed` and the tensor's name (for timing real-size architectures without weights).
    pub fn random(component: impl Into<String>, seed: u64, dtype: DType, device: &Device) -> Self {
        let mut s = Source::new(component, HashMap::new());
        s.random = Some((seed, dtype, device.clone()));
        s
    }

    /// The tensors made in random mode (after building a model from this source).
    pub fn into_made(self) -> HashMap<String, Tensor> {
        self.made.into_inner()
    }

    fn invent(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let Some((seed, dtype, device)) = &self.random else {
            unreachable!("invent is only called in random mode")
        };
        if let Some(t) = self.made.borrow().get(name) {
            return Ok(t.clone());
        }
        let n: usize = shape.iter().product();
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        let data: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if leaf.contains("norm") && shape.len() == 1 {
            vec![1.0; n]
        } else {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let a = (3.0 / fan_in as f32).sqrt();
            let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ h);
            (0..n).map(|_| rng.random_range(-a..a)).collect()
        };
        let t = Tensor::from_vec(data, shape, device)?.to_dtype(*dtype)?;
        self.made.borrow_mut().insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The component's name (for messages).
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The root path.
    pub fn root(&self) -> Vb<'_> {
        Vb {
            src: self,
            prefix: String::new(),
        }
    }

    /// Whether a tensor exists (in random mode: whether it was already made; optional
    /// tensors such as LoRA adapters are never invented).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.made.borrow().contains_key(name)
    }

    /// Names the file holds that nothing asked for.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The tensors, consuming the source (so each can be dropped as soon as it is copied).
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors
    }

    /// All tensors (for building trainable variables).
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if self.random.is_some() && !self.tensors.contains_key(name) {
            return self.invent(name, shape);
        }
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            component: self.component.clone(),
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
        if t.dims() != shape {
            return Err(Error::TensorShape {
                component: self.component.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(t.clone())
    }
}

/// A path into a [`Source`] (`down_blocks.0.resnets.1`), like candle's `VarBuilder`.
#[derive(Clone)]
pub struct Vb<'a> {
    src: &'a Source,
    prefix: String,
}

impl<'a> Vb<'a> {
    /// The sub-path `name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Vb<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Vb {
            src: self.src,
            prefix,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` under this path, with the expected shape.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.src.get(&self.full(name), shape)
    }

    /// Whether `name` exists under this path.
    pub fn contains(&self, name: &str) -> bool {
        self.src.contains(&self.full(name))
    }

    /// The component name.
    pub fn component(&self) -> &str {
        self.src.component()
    }
}

/// `y = x Wᵀ + b`, plus a low-rank adapter `x Aᵀ Bᵀ` when the source holds
/// `lora_A.weight` [r, in] and `lora_B.weight` [out, r] under the layer's path (PEFT's names,
/// scale 1).
#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    lora: Option<(Tensor, Tensor)>,
}

impl Linear {
    /// Load `weight` [out, in] and, when `bias`, `bias` [out].
    pub fn load(vb: &Vb, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let w = vb.get(&[out, inp], "weight")?;
        let b = if bias {
            Some(vb.get(&[out], "bias")?)
        } else {
            None
        };
        let lora = if vb.contains("lora_A.weight") {
            let a = vb
                .src
                .tensors
                .get(&vb.full("lora_A.weight"))
                .map(|t| t.dim(0));
            let r = match a {
                Some(Ok(r)) => r,
                _ => 0,
            };
            Some((
                vb.get(&[r, inp], "lora_A.weight")?,
                vb.get(&[out, r], "lora_B.weight")?,
            ))
        } else {
            None
        };
        Ok(Linear { w, b, lora })
    }

    /// Apply to `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.broadcast_matmul(&self.w.t()?)?;
        if let Some((a, b)) = &self.lora {
            y = (y + x.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?)?;
        }
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// 2-D convolution with symmetric padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    w: Tensor,
    b: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Load `weight` [out, in, k, k] and `bias` [out].
    pub fn load(
        vb: &Vb,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Conv2d {
            w: vb.get(&[out, inp, k, k], "weight")?,
            b: Some(vb.get(&[out], "bias")?),
            stride,
            padding,
        })
    }

    /// Apply to `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.w, self.padding, self.stride, 1, 1)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => y,
        })
    }
}

/// GroupNorm written out (population variance, like torch), with affine.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Load `weight` and `bias` [channels].
    pub fn load(vb: &Vb, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::Config(format!(
                "{}: {channels} channels do not split into {groups} groups",
                vb.component()
            )));
        }
        Ok(GroupNorm {
            w: vb.get(&[channels], "weight")?,
            b: vb.get(&[channels], "bias")?,
            groups,
            eps,
        })
    }

    /// Apply to `[B, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let xg = x.to_dtype(DType::F32)?.reshape((b, self.groups, ()))?;
        let mean = xg.mean_keepdim(2)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut shape = vec![1, c];
        shape.extend(std::iter::repeat_n(1, dims.len() - 2));
        let xn = xn.reshape(dims.as_slice())?.to_dtype(dtype)?;
        Ok(xn
            .broadcast_mul(&self.w.reshape(shape.as_slice())?)?
            .broadcast_add(&self.b.reshape(shape.as_slice())?)?)
    }
}

/// LayerNorm over the last dimension, written out; the affine part is optional (SD3's
/// AdaLayerNorm norms have none).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    w: Option<Tensor>,
    b: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// Load `weight` and `bias` [dim].
    pub fn load(vb: &Vb, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            w: Some(vb.get(&[dim], "weight")?),
            b: Some(vb.get(&[dim], "bias")?),
            eps,
        })
    }

    /// Without affine parameters.
    pub fn plain(eps: f64) -> Self {
        LayerNorm {
            w: None,
            b: None,
            eps,
        }
    }

    /// Apply over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let mean = x32.mean_keepdim(D::Minus1)?;
        let xc = x32.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = xc
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        if let Some(w) = &self.w {
            y = y.broadcast_mul(w)?;
        }
        if let Some(b) = &self.b {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    }
}

/// T5's RMS norm (no mean subtraction, no bias), written out.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Load `weight` [dim].
    pub fn load(vb: &Vb, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            w: vb.get(&[dim], "weight")?,
            eps,
        })
    }

    /// Apply over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let y = x32.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(y.to_dtype(dtype)?.broadcast_mul(&self.w)?)
    }
}

/// The activations the SD family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// x·σ(x).
    Silu,
    /// Exact (erf) GELU.
    Gelu,
    /// tanh-approximate GELU (`gelu_new`, `gelu-approximate=tanh`).
    GeluTanh,
    /// CLIP's x·σ(1.702x).
    QuickGelu,
    /// max(x, 0).
    Relu,
}

impl Act {
    /// Parse a transformers / diffusers activation name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Act::Silu,
            "gelu" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu-approximate" | "gelu_fast" => Act::GeluTanh,
            "quick_gelu" => Act::QuickGelu,
            "relu" => Act::Relu,
            other => return Err(Error::Config(format!("unsupported activation `{other}`"))),
        })
    }

    /// Apply.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Silu => x.silu()?,
            Act::Gelu => x.gelu_erf()?,
            Act::GeluTanh => x.gelu()?,
            Act::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Act::Relu => x.relu()?,
        })
    }
}

/// `[B, N, H·D]` → `[B, H, N, D]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[B, H, N, D]` → `[B, N, H·D]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, n, h * d))?)
}

/// Scaled dot-product attention on `[B, H, N, D]` with the composite (differentiable)
/// softmax, in f32; `mask` is added to the scores (broadcast).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = q.dtype();
    let d = q.dim(D::Minus1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let mut s = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    if let Some(m) = mask {
        s = s.broadcast_add(m)?;
    }
    let p = candle_nn::ops::softmax(&s, D::Minus1)?;
    Ok(p.matmul(&v)?.to_dtype(dtype)?)
}

/// 2× nearest upsampling as broadcast + reshape (its backward is a sum).
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .contiguous()?
        .reshape((b, c, 2 * h, 2 * w))?)
}

/// diffusers' `get_timestep_embedding`, computed in f32 as torch does: `dim` channels,
/// `flip_sin_to_cos` puts cos first, `shift` is `downscale_freq_shift`.
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f32,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let ln = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((ln * i as f32) / (half as f32 - shift)).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let args: Vec<f32> = freqs.iter().map(|f| ti * f).collect();
        let (first, second): (Vec<f32>, Vec<f32>) = if flip_sin_to_cos {
            (
                args.iter().map(|a| a.cos()).collect(),
                args.iter().map(|a| a.sin()).collect(),
            )
        } else {
            (
                args.iter().map(|a| a.sin()).collect(),
                args.iter().map(|a| a.cos()).collect(),
            )
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Ok(Tensor::from_vec(out, (t.len(), dim), device)?)
}
