//! Frozen feature extractors for the discriminator ([`Backbone`]), and the small encoder the
//! project trains on the built-in data set for the built-in model ([`ShapesEncoder`]).
//!
//! The encoder is a plain CNN (no normalisation layers, so nothing on its path lacks a
//! backward): 32×32 → 16×16 (64 ch) → 8×8 (128 ch) → 4×4 (128 ch), with a linear classifier of
//! the four labels of `builtin:shapes` (shape, colour, background, size) on the pooled last
//! block, plus a fifth, self-supervised label: which degradation (none, Gaussian noise, blur)
//! was applied to the training image. Trained on the labels alone, the features were nearly
//! blind to noise and blur (a fresh discriminator on them separated σ = 0.05 noise at AUC 0.51
//! and a 3×3 box blur at 0.62), so a discriminator built on them could not see the artefacts
//! a few-step sampler leaves; the degradation label keeps that information in the features.
//! The discriminator reads the three block outputs. It is never the Inception network used for
//! FID.

use candle_core::{D, DType, Device, Module, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use adt_datasets::shapes::{self, BACKGROUNDS, COLORS, SHAPES, SIZES, ShapesConfig};

use crate::{Error, Progress, Result};

/// A frozen feature extractor: block features of images in [-1, 1] (NCHW), differentiable with
/// respect to the images.
pub trait Backbone {
    /// A name for logs and manifests.
    fn name(&self) -> &str;
    /// Channels of each returned block.
    fn channels(&self) -> Vec<usize>;
    /// Features of several blocks, each `[B, C_l, H_l, W_l]`.
    fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>>;
}

/// (in, out, stride) of the encoder's convolutions (all 3×3, padding 1).
const LAYERS: [(usize, usize, usize); 6] = [
    (3, 32, 1),
    (32, 64, 2),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 128, 2),
];
/// Layers whose outputs are the feature blocks.
const TAPS: [usize; 3] = [2, 4, 5];
/// The self-supervised label: the degradation applied to a training image.
pub const DEGRADATIONS: [&str; 3] = ["none", "noise", "blur"];
/// Logits: 3 shapes, 6 colours, 5 backgrounds, 2 sizes, 3 degradations.
const CLASSES: [usize; 5] = [
    SHAPES.len(),
    COLORS.len(),
    BACKGROUNDS.len(),
    SIZES.len(),
    DEGRADATIONS.len(),
];

/// The built-in data set's encoder.
pub struct ShapesEncoder {
    /// Conv weights and biases, then the classifier's weight `[19, 128]` and bias.
    params: Vec<Tensor>,
    sha256: String,
}

impl ShapesEncoder {
    /// Names of the tensors, in `params` order.
    fn names() -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..LAYERS.len() {
            v.push(format!("conv{i}.weight"));
            v.push(format!("conv{i}.bias"));
        }
        v.push("classifier.weight".into());
        v.push("classifier.bias".into());
        v
    }

    fn shapes() -> Vec<Vec<usize>> {
        let mut v = Vec::new();
        for (cin, cout, _) in LAYERS {
            v.push(vec![cout, cin, 3, 3]);
            v.push(vec![cout]);
        }
        let n: usize = CLASSES.iter().sum();
        v.push(vec![n, 128]);
        v.push(vec![n]);
        v
    }

    /// He-initialised trainable parameters.
    pub fn init_vars(seed: u64, dev: &Device) -> Result<Vec<Var>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Self::shapes()
            .into_iter()
            .map(|s| {
                let fan_in: usize = s.iter().skip(1).product::<usize>().max(1);
                let n: usize = s.iter().product();
                let data: Vec<f32> = if s.len() == 1 {
                    vec![0.0; n]
                } else {
                    let std = (2.0 / fan_in as f64).sqrt() as f32;
                    let nd = Normal::new(0.0f32, std).map_err(|e| Error::Invalid(e.to_string()))?;
                    (0..n).map(|_| nd.sample(&mut rng)).collect()
                };
                Var::from_vec(data, s, dev).map_err(cerr)
            })
            .collect()
    }

    /// A frozen encoder from tensors (in [`ShapesEncoder::names`] order).
    fn from_tensors(params: Vec<Tensor>) -> Result<Self> {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for t in &params {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?;
            for x in v {
                sha2::Digest::update(&mut h, x.to_le_bytes());
            }
        }
        let sha256 = sha2::Digest::finalize(h)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(ShapesEncoder { params, sha256 })
    }

    /// Freeze trained variables.
    pub fn freeze(vars: &[Var]) -> Result<Self> {
        Self::from_tensors(vars.iter().map(|v| v.as_tensor().detach()).collect())
    }

    /// Read safetensors bytes (any float dtype), checking every tensor by name and shape.
    pub fn from_bytes(bytes: &[u8], dev: &Device) -> Result<Self> {
        let mut st = candle_core::safetensors::load_buffer(bytes, dev)
            .map_err(|e| Error::Invalid(format!("encoder weights: {e}")))?;
        let mut params = Vec::new();
        for (name, shape) in Self::names().into_iter().zip(Self::shapes()) {
            let t = st.remove(&name).ok_or_else(|| {
                Error::Invalid(format!("encoder weights: missing tensor `{name}`"))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(Error::Invalid(format!(
                    "encoder weights: tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            params.push(t.to_dtype(DType::F32).map_err(cerr)?);
        }
        Self::from_tensors(params)
    }

    /// The committed weights (made by `adt-bench train-encoder`, see the README).
    pub fn builtin(dev: &Device) -> Result<Self> {
        Self::from_bytes(BUILTIN_WEIGHTS, dev)
    }

    /// A second encoder of the same architecture trained apart from [`Self::builtin`] — its own
    /// initialisation and training examples disjoint from the first's and from the evaluation
    /// split (`adt-bench train-encoder --seed 1`) — for evaluation distances that do not share
    /// the discriminator's backbone.
    pub fn independent(dev: &Device) -> Result<Self> {
        Self::from_bytes(INDEPENDENT_WEIGHTS, dev)
    }

    /// One vector per image `[B, C]`: the last block's features averaged over space (what the
    /// label heads read). Images `[B, 3, H, W]` in [-1, 1].
    pub fn embedding(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        blocks_with(&self.params, x)?
            .last()
            .expect("taps")
            .mean(D::Minus1)?
            .mean(D::Minus1)
    }

    /// Safetensors bytes of trained variables (f16 when `half`), names sorted.
    pub fn to_bytes(vars: &[Var], half: bool) -> Result<Vec<u8>> {
        let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, v) in Self::names().into_iter().zip(vars) {
            let data = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?;
            let bytes: Vec<u8> = if half {
                data.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect()
            } else {
                data.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            entries.push((name, v.as_tensor().dims().to_vec(), bytes));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let dtype = if half {
            safetensors::Dtype::F16
        } else {
            safetensors::Dtype::F32
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = entries
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(dtype, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Invalid(e.to_string()))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize(views, None).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// SHA-256 of the weights.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Logits `[B, 19]` (shape 3 | colour 6 | background 5 | size 2 | degradation 3).
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        logits_with(&self.params, x)
    }
}

const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../weights/shapes-encoder.safetensors");
const INDEPENDENT_WEIGHTS: &[u8] =
    include_bytes!("../weights/shapes-encoder-independent.safetensors");

fn cerr(e: candle_core::Error) -> Error {
    Error::Invalid(format!("tensor error: {e}"))
}

fn blocks_with(params: &[Tensor], x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
    let mut h = x.clone();
    let mut taps = Vec::new();
    for (i, (_, cout, stride)) in LAYERS.iter().enumerate() {
        let w = &params[2 * i];
        let b = params[2 * i + 1].reshape((1, *cout, 1, 1))?;
        h = h.conv2d(w, 1, *stride, 1, 1)?.broadcast_add(&b)?.silu()?;
        if TAPS.contains(&i) {
            taps.push(h.clone());
        }
    }
    Ok(taps)
}

fn logits_with(params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let blocks = blocks_with(params, x)?;
    let last = blocks
        .last()
        .expect("taps")
        .mean(D::Minus1)?
        .mean(D::Minus1)?;
    let n = params.len();
    candle_nn::Linear::new(params[n - 2].clone(), Some(params[n - 1].clone())).forward(&last)
}

impl Backbone for ShapesEncoder {
    fn name(&self) -> &str {
        "shapes-encoder"
    }
    fn channels(&self) -> Vec<usize> {
        TAPS.iter().map(|&i| LAYERS[i].1).collect()
    }
    fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        blocks_with(&self.params, x)
    }
}

/// Images `[B, 3, S, S]` in [-1, 1] and the four label indices of examples `start..start+n`.
pub fn shapes_batch(
    cfg: ShapesConfig,
    start: u64,
    n: usize,
    dev: &Device,
) -> Result<(Tensor, [Vec<u32>; 4])> {
    let (x, [a, b, c, d, _]) = labelled_batch(cfg, start, n, false, dev)?;
    Ok((x, [a, b, c, d]))
}

/// The encoder's training batch: images of examples `start..start+n`, each degraded as
/// [`degrade`] draws from its index when `degraded`, with the five labels.
pub fn labelled_batch(
    cfg: ShapesConfig,
    start: u64,
    n: usize,
    degraded: bool,
    dev: &Device,
) -> Result<(Tensor, [Vec<u32>; 5])> {
    let s = cfg.size as usize;
    let mut data = Vec::with_capacity(n * 3 * s * s);
    let mut labels: [Vec<u32>; 5] = Default::default();
    for i in 0..n as u64 {
        let ex = shapes::generate(cfg, start + i);
        let mut img = adt_datasets::transform::to_chw_signed(&ex.image);
        let kind = if degraded {
            degrade(&mut img, s, start + i)
        } else {
            0
        };
        data.extend(img);
        let l = ex.labels;
        labels[0].push(l.shape as u32);
        labels[1].push(l.color as u32);
        labels[2].push(l.background as u32);
        labels[3].push(l.size as u32);
        labels[4].push(kind);
    }
    Ok((
        Tensor::from_vec(data, (n, 3, s, s), dev).map_err(cerr)?,
        labels,
    ))
}

/// Degrade a CHW image in [-1, 1] of side `s` in place, drawn from `index`: a third of the
/// images untouched (0), a third with Gaussian noise of σ ∈ [0.02, 0.3] (1), a third blurred:
/// a blend w ∈ [0.3, 1] towards the 3×3 box blur, edges replicated (2). Returns the kind.
pub fn degrade(img: &mut [f32], s: usize, index: u64) -> u32 {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(index ^ 0xDE6_4ADE);
    let kind = rng.random_range(0..DEGRADATIONS.len() as u32);
    match kind {
        1 => {
            let sigma: f32 = rng.random_range(0.02..0.3);
            for v in img.iter_mut() {
                let z: f32 = rand_distr::StandardNormal.sample(&mut rng);
                *v = (*v + sigma * z).clamp(-1.0, 1.0);
            }
        }
        2 => {
            let w: f32 = rng.random_range(0.3..1.0);
            let src = img.to_vec();
            for (c, plane) in img.chunks_mut(s * s).enumerate() {
                let p = &src[c * s * s..(c + 1) * s * s];
                for y in 0..s {
                    for x in 0..s {
                        let mut acc = 0.0;
                        for dy in [-1i64, 0, 1] {
                            for dx in [-1i64, 0, 1] {
                                let yy = (y as i64 + dy).clamp(0, s as i64 - 1) as usize;
                                let xx = (x as i64 + dx).clamp(0, s as i64 - 1) as usize;
                                acc += p[yy * s + xx];
                            }
                        }
                        let v = &mut plane[y * s + x];
                        *v = (1.0 - w) * *v + w * acc / 9.0;
                    }
                }
            }
        }
        _ => {}
    }
    kind
}

/// Settings of [`train_encoder`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EncoderTrainConfig {
    /// Optimizer steps.
    pub iters: u64,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate (AdamW, cosine decay).
    pub lr: f64,
    /// Initialisation and data order seed.
    pub seed: u64,
    /// Held-out examples for the reported accuracy (indices from 3,000,000 on).
    pub eval: usize,
}

impl Default for EncoderTrainConfig {
    fn default() -> Self {
        EncoderTrainConfig {
            iters: 1500,
            batch: 64,
            lr: 2e-3,
            seed: 0,
            eval: 2000,
        }
    }
}

/// First held-out example index (training uses `seed·10⁷ + step·batch + i`, below it).
pub const EVAL_OFFSET: u64 = 3_000_000;

/// Per-label accuracies on held-out examples, degraded as in training (shape, colour,
/// background, size, degradation).
pub fn accuracy(enc: &ShapesEncoder, n: usize, dev: &Device) -> Result<[f64; 5]> {
    let cfg = ShapesConfig::DEFAULT;
    let mut correct = [0usize; 5];
    let chunk = 250;
    let mut done = 0;
    while done < n {
        let m = chunk.min(n - done);
        let (x, labels) = labelled_batch(cfg, EVAL_OFFSET + done as u64, m, true, dev)?;
        let logits = enc.logits(&x).map_err(cerr)?;
        let mut off = 0;
        for (k, &c) in CLASSES.iter().enumerate() {
            let pred = logits
                .narrow(1, off, c)
                .and_then(|l| l.argmax(1))
                .and_then(|p| p.to_vec1::<u32>())
                .map_err(cerr)?;
            correct[k] += pred.iter().zip(&labels[k]).filter(|(a, b)| a == b).count();
            off += c;
        }
        done += m;
    }
    Ok(correct.map(|c| c as f64 / n as f64))
}

/// Train the encoder on `builtin:shapes`, each image degraded as [`degrade`] draws, with
/// cross-entropy on the five labels. Deterministic for a seed on one machine type. Returns the
/// trained variables.
pub fn train_encoder(
    cfg: &EncoderTrainConfig,
    dev: &Device,
    progress: &mut dyn Progress,
) -> Result<Vec<Var>> {
    let vars = ShapesEncoder::init_vars(cfg.seed, dev)?;
    let mut opt = crate::adamw::AdamW::new(&vars, 0.01);
    let data = ShapesConfig::DEFAULT;
    for step in 0..cfg.iters {
        let start = cfg.seed * 10_000_000 + step * cfg.batch as u64;
        let (x, labels) = labelled_batch(data, start, cfg.batch, true, dev)?;
        let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let logits = logits_with(&params, &x).map_err(cerr)?;
        let mut loss: Option<Tensor> = None;
        let mut off = 0;
        for (k, &c) in CLASSES.iter().enumerate() {
            let l = logits.narrow(1, off, c).map_err(cerr)?;
            let y = Tensor::from_vec(labels[k].clone(), cfg.batch, dev).map_err(cerr)?;
            let ce = candle_nn::loss::cross_entropy(&l, &y).map_err(cerr)?;
            loss = Some(match loss {
                Some(a) => (a + ce).map_err(cerr)?,
                None => ce,
            });
            off += c;
        }
        let loss = loss.ok_or_else(|| Error::Invalid("no labels".into()))?;
        let value = loss.to_scalar::<f32>().map_err(cerr)?;
        if !value.is_finite() {
            return Err(Error::Diverged {
                reason: format!("encoder loss is {value} at step {step}"),
            });
        }
        let grads = loss.backward().map_err(cerr)?;
        let warm = 100.min(cfg.iters / 10).max(1);
        let lr = if step < warm {
            cfg.lr * (step + 1) as f64 / warm as f64
        } else {
            let p = (step - warm) as f64 / (cfg.iters - warm).max(1) as f64;
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        opt.step(&grads, lr, 1.0).map_err(cerr)?;
        progress.update(step + 1, cfg.iters, &format!("loss {value:.4} lr {lr:.2e}"));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_encoder_classifies_held_out_shapes() {
        let dev = Device::Cpu;
        let enc = ShapesEncoder::builtin(&dev).unwrap();
        let acc = accuracy(&enc, 500, &dev).unwrap();
        eprintln!("held-out accuracy (shape, colour, background, size, degradation): {acc:?}");
        assert!(acc[..4].iter().all(|&a| a >= 0.95), "{acc:?}");
        // Chance is 1/3; the misses are the faintest noise and blur.
        assert!(acc[4] >= 0.8, "{acc:?}");
    }

    #[test]
    fn degradations_are_drawn_per_index_and_change_the_image_as_named() {
        let s = 8;
        // A vertical edge: left half −0.5, right half 0.5.
        let orig: Vec<f32> = (0..3 * s * s)
            .map(|i| if (i % s) < s / 2 { -0.5 } else { 0.5 })
            .collect();
        let mut seen = [0usize; 3];
        for index in 0..300u64 {
            let mut a = orig.clone();
            let mut b = orig.clone();
            let k = degrade(&mut a, s, index);
            assert_eq!(k, degrade(&mut b, s, index), "deterministic per index");
            assert_eq!(a, b);
            seen[k as usize] += 1;
            let changed = a
                .iter()
                .zip(&orig)
                .filter(|(x, y)| (*x - *y).abs() > 1e-6)
                .count();
            match k {
                0 => assert_eq!(changed, 0),
                // Noise touches (almost) every pixel.
                1 => assert!(changed > 3 * s * s * 9 / 10, "{changed}"),
                // Blur touches only the two columns beside the vertical edge.
                2 => {
                    assert_eq!(changed, 3 * s * 2);
                    assert!(a.iter().all(|v| (-0.5..=0.5).contains(v)));
                }
                _ => panic!("kind {k}"),
            }
        }
        assert!(seen.iter().all(|&c| c > 70), "{seen:?}");
    }

    #[test]
    fn features_carry_gradient_to_the_images() {
        let dev = Device::Cpu;
        let enc = ShapesEncoder::builtin(&dev).unwrap();
        let (x, _) = shapes_batch(ShapesConfig::DEFAULT, 0, 2, &dev).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        let f = enc.features(x.as_tensor()).unwrap();
        assert_eq!(f.len(), 3);
        let loss = f
            .iter()
            .map(|t| t.sqr().unwrap().mean_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let g = loss.backward().unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(gx > 0.0);
    }

    #[test]
    fn weights_with_a_missing_or_misshaped_tensor_are_refused_by_name() {
        let dev = Device::Cpu;
        let vars = ShapesEncoder::init_vars(0, &dev).unwrap();
        let bytes = ShapesEncoder::to_bytes(&vars[..vars.len() - 1], false);
        // Serialising fewer tensors than names drops the last one.
        let bytes = bytes.unwrap();
        let e = ShapesEncoder::from_bytes(&bytes, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("classifier.bias"), "{e}");
    }
}
