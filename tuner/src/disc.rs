//! The siamese discriminator of DESIGN §1.4, and the standard projected alternative on the same
//! heads.
//!
//! A frozen [`Backbone`] gives block features F_l. Per block a trainable head h_l (3×3 conv →
//! SiLU → global average) with an EMA twin h'_l (φ' ← τφ' + (1−τ)φ), and a shared predictor g
//! (two linear layers). Similarity s(a, b) = mean_l cos(g(h_l(F_l(a))), sg(h'_l(F_l(b)))).
//!
//! * [`DiscLoss::Siamese`] (default): logits s/T; L_D = softplus(−s_rr) + softplus(s_gr),
//!   L_adv = softplus(−s_gr), where s_rr compares two augmentations of x0 and s_gr the generated
//!   x̂0 with the x0 it came from.
//! * [`DiscLoss::Hinge`] / [`DiscLoss::NonSaturating`]: a per-block linear projection of the
//!   same heads gives a real-vs-generated logit (projected-discriminator style).
//!
//! Augmentation is differentiable (colour, translation, cutout; DiffAugment-style) and drawn
//! from a seeded RNG, so a step is reproducible from `(seed, iteration)`.

use candle_core::{D, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::adamw::AdamW;
use crate::backbone::Backbone;

/// The discriminator's objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscLoss {
    /// ADT's siamese similarity loss.
    Siamese,
    /// Hinge loss on projected logits.
    Hinge,
    /// Non-saturating logistic loss on projected logits.
    NonSaturating,
}

impl DiscLoss {
    /// Parse `siamese`, `hinge`, `non-saturating` (or `ns`).
    pub fn parse(s: &str) -> Option<DiscLoss> {
        match s {
            "siamese" => Some(DiscLoss::Siamese),
            "hinge" => Some(DiscLoss::Hinge),
            "non-saturating" | "ns" => Some(DiscLoss::NonSaturating),
            _ => None,
        }
    }
}

/// Discriminator settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DiscConfig {
    /// Head output width.
    pub dim: usize,
    /// EMA rate τ of the twin heads.
    pub tau: f64,
    /// Temperature T of the siamese logits.
    pub temperature: f64,
    /// Objective.
    pub loss: DiscLoss,
    /// Learning rate.
    pub lr: f64,
    /// Colour jitter strength (0 disables).
    pub aug_color: f64,
    /// Largest translation as a fraction of the side (0 disables).
    pub aug_translate: f64,
    /// Cutout square side as a fraction of the side (0 disables).
    pub aug_cutout: f64,
}

impl Default for DiscConfig {
    fn default() -> Self {
        DiscConfig {
            dim: 64,
            tau: 0.99,
            temperature: 0.2,
            loss: DiscLoss::Siamese,
            lr: 2e-4,
            aug_color: 0.2,
            aug_translate: 0.125,
            aug_cutout: 0.25,
        }
    }
}

/// Statistics of one discriminator evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DiscStats {
    /// The discriminator loss.
    pub loss_d: f64,
    /// Mean real–real similarity (siamese) or real logit (projected).
    pub real: f64,
    /// Mean generated–real similarity (siamese) or generated logit (projected).
    pub fake: f64,
    /// Gradient norm of the discriminator update.
    pub grad_norm: f64,
}

/// The discriminator: frozen backbone, trainable heads, EMA twins, predictor, projections.
pub struct Discriminator {
    backbone: Box<dyn Backbone>,
    cfg: DiscConfig,
    /// Per block: conv weight `[dim, C_l, 3, 3]`, bias `[dim]`; then predictor W1, b1, W2, b2;
    /// then one projection `[dim]` per block.
    vars: Vec<Var>,
    /// EMA copies of the head parameters (2 per block).
    ema: Vec<Tensor>,
    opt: AdamW,
    blocks: usize,
}

fn cerr(e: candle_core::Error) -> crate::Error {
    crate::Error::Invalid(format!("discriminator: {e}"))
}

impl Discriminator {
    /// A discriminator with fresh heads.
    pub fn new(
        backbone: Box<dyn Backbone>,
        cfg: DiscConfig,
        seed: u64,
        dev: &Device,
    ) -> crate::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD15C);
        let mut normal = |shape: Vec<usize>, fan_in: usize| -> crate::Result<Var> {
            let std = (1.0 / fan_in as f64).sqrt() as f32;
            let nd = Normal::new(0.0f32, std).map_err(|e| crate::Error::Invalid(e.to_string()))?;
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| nd.sample(&mut rng)).collect();
            Var::from_vec(data, shape, dev).map_err(cerr)
        };
        let chans = backbone.channels();
        let d = cfg.dim;
        let mut vars = Vec::new();
        for &c in &chans {
            vars.push(normal(vec![d, c, 3, 3], c * 9)?);
            vars.push(Var::zeros(d, candle_core::DType::F32, dev).map_err(cerr)?);
        }
        vars.push(normal(vec![d, d], d)?);
        vars.push(Var::zeros(d, candle_core::DType::F32, dev).map_err(cerr)?);
        vars.push(normal(vec![d, d], d)?);
        vars.push(Var::zeros(d, candle_core::DType::F32, dev).map_err(cerr)?);
        for _ in &chans {
            vars.push(normal(vec![d], d)?);
        }
        let ema = vars[..2 * chans.len()]
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(cerr)?;
        let opt = AdamW::new(&vars, 0.0);
        Ok(Discriminator {
            backbone,
            cfg,
            blocks: chans.len(),
            vars,
            ema,
            opt,
        })
    }

    /// The settings.
    pub fn config(&self) -> &DiscConfig {
        &self.cfg
    }

    /// The backbone's name.
    pub fn backbone_name(&self) -> &str {
        self.backbone.name()
    }

    fn head(w: &Tensor, b: &Tensor, f: &Tensor) -> candle_core::Result<Tensor> {
        let d = b.dim(0)?;
        f.conv2d(w, 1, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, d, 1, 1))?)?
            .silu()?
            .mean(D::Minus1)?
            .mean(D::Minus1)
    }

    fn predictor(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let p = 2 * self.blocks;
        let (w1, b1, w2, b2) = (
            self.vars[p].as_tensor(),
            self.vars[p + 1].as_tensor(),
            self.vars[p + 2].as_tensor(),
            self.vars[p + 3].as_tensor(),
        );
        let h = z.matmul(&w1.t()?)?.broadcast_add(b1)?.silu()?;
        h.matmul(&w2.t()?)?.broadcast_add(b2)
    }

    /// Online head outputs `[B, dim]` per block.
    fn online(&self, feats: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
        feats
            .iter()
            .enumerate()
            .map(|(l, f)| {
                Self::head(
                    self.vars[2 * l].as_tensor(),
                    self.vars[2 * l + 1].as_tensor(),
                    f,
                )
            })
            .collect()
    }

    /// EMA-twin head outputs, detached.
    fn target(&self, feats: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
        feats
            .iter()
            .enumerate()
            .map(|(l, f)| {
                Ok(Self::head(&self.ema[2 * l], &self.ema[2 * l + 1], &f.detach())?.detach())
            })
            .collect()
    }

    /// s(a, b) per example `[B]`.
    fn similarity(&self, fa: &[Tensor], fb: &[Tensor]) -> candle_core::Result<Tensor> {
        let za = self.online(fa)?;
        let zb = self.target(fb)?;
        let mut acc: Option<Tensor> = None;
        for (a, b) in za.iter().zip(&zb) {
            let p = self.predictor(a)?;
            let cos = cosine(&p, b)?;
            acc = Some(match acc {
                Some(x) => (x + cos)?,
                None => cos,
            });
        }
        acc.expect("at least one block") / self.blocks as f64
    }

    /// Projected logit per example `[B]`.
    fn logit(&self, f: &[Tensor]) -> candle_core::Result<Tensor> {
        let z = self.online(f)?;
        let p = 2 * self.blocks + 4;
        let mut acc: Option<Tensor> = None;
        for (l, zl) in z.iter().enumerate() {
            let u = self.vars[p + l].as_tensor();
            let s = zl.broadcast_mul(&u.unsqueeze(0)?)?.sum(D::Minus1)?;
            acc = Some(match acc {
                Some(x) => (x + s)?,
                None => s,
            });
        }
        acc.expect("at least one block") / self.blocks as f64
    }

    /// Per-example real and generated scores `[B]` — similarities s_rr (two augmentations of
    /// each real image) and s_gr (each generated image against its real one) for the siamese
    /// form, logits for the projected ones. The siamese form always augments (it needs two
    /// views); the projected forms augment when `augment` is set.
    fn pair_scores(
        &self,
        real: &Tensor,
        fake: &Tensor,
        rng: &mut ChaCha8Rng,
        augment: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        match self.cfg.loss {
            DiscLoss::Siamese => {
                let f1 = self.backbone.features(&self.augment(real, rng)?)?;
                let f2 = self.backbone.features(&self.augment(real, rng)?)?;
                let ff = self.backbone.features(&self.augment(fake, rng)?)?;
                Ok((self.similarity(&f1, &f2)?, self.similarity(&ff, &f2)?))
            }
            DiscLoss::Hinge | DiscLoss::NonSaturating => {
                let mut view = |x: &Tensor| -> candle_core::Result<Tensor> {
                    let x = if augment {
                        self.augment(x, rng)?
                    } else {
                        x.clone()
                    };
                    self.logit(&self.backbone.features(&x)?)
                };
                Ok((view(real)?, view(fake)?))
            }
        }
    }

    /// The discriminator loss on one batch — `real` x0 and `fake` x̂0 generated from that x0,
    /// `[B, 3, S, S]` in [-1, 1] — with the mean real and fake statistics (similarities for the
    /// siamese form, logits for the projected ones).
    fn d_loss(
        &self,
        real: &Tensor,
        fake: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<(Tensor, f64, f64)> {
        let (r, f) = self.pair_scores(real, fake, rng, true)?;
        let ld = match self.cfg.loss {
            DiscLoss::Siamese => {
                let t = self.cfg.temperature;
                (softplus(&(r.neg()? / t)?)? + softplus(&(&f / t)?)?)?.mean_all()?
            }
            DiscLoss::Hinge => {
                ((1.0 - &r)?.relu()?.mean_all()? + (&f + 1.0)?.relu()?.mean_all()?)?
            }
            DiscLoss::NonSaturating => (softplus(&r.neg()?)? + softplus(&f)?)?.mean_all()?,
        };
        Ok((ld, mean(&r)?, mean(&f)?))
    }

    /// The generator's adversarial loss on one batch (only the terms that depend on `fake`).
    fn g_loss(
        &self,
        real: &Tensor,
        fake: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        match self.cfg.loss {
            DiscLoss::Siamese => {
                let t = self.cfg.temperature;
                let fr = self.backbone.features(&self.augment(real, rng)?)?;
                let ff = self.backbone.features(&self.augment(fake, rng)?)?;
                let s_gr = self.similarity(&ff, &fr)?;
                softplus(&(s_gr.neg()? / t)?)?.mean_all()
            }
            DiscLoss::Hinge => self
                .logit(&self.backbone.features(&self.augment(fake, rng)?)?)?
                .neg()?
                .mean_all(),
            DiscLoss::NonSaturating => {
                let lf = self.logit(&self.backbone.features(&self.augment(fake, rng)?)?)?;
                softplus(&lf.neg()?)?.mean_all()
            }
        }
    }

    /// One discriminator update (then the EMA of the twins). `fake` is detached here.
    pub fn train_step(
        &mut self,
        real: &Tensor,
        fake: &Tensor,
        seed: u64,
        lr: f64,
    ) -> crate::Result<DiscStats> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (ld, r, f) = self.d_loss(real, &fake.detach(), &mut rng).map_err(cerr)?;
        let loss_d = ld.to_scalar::<f32>().map_err(cerr)? as f64;
        if !loss_d.is_finite() {
            return Ok(DiscStats {
                loss_d,
                real: r,
                fake: f,
                grad_norm: f64::NAN,
            });
        }
        let grads = ld.backward().map_err(cerr)?;
        let st = self.opt.step(&grads, lr, 10.0).map_err(cerr)?;
        if !st.skipped {
            self.update_ema().map_err(cerr)?;
        }
        Ok(DiscStats {
            loss_d,
            real: r,
            fake: f,
            grad_norm: st.grad_norm,
        })
    }

    /// Per-example "realness" scores on a batch without any update: for the projected forms the
    /// logits of the un-augmented images; for the siamese form s_rr and s_gr. Higher = more real.
    pub fn scores(
        &self,
        real: &Tensor,
        fake: &Tensor,
        seed: u64,
    ) -> crate::Result<(Vec<f32>, Vec<f32>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (r, f) = self
            .pair_scores(&real.detach(), &fake.detach(), &mut rng, false)
            .map_err(cerr)?;
        Ok((r.to_vec1().map_err(cerr)?, f.to_vec1().map_err(cerr)?))
    }

    fn update_ema(&mut self) -> candle_core::Result<()> {
        let tau = self.cfg.tau;
        for (e, v) in self.ema.iter_mut().zip(&self.vars) {
            *e = ((&*e * tau)? + (v.as_tensor().detach() * (1.0 - tau))?)?.detach();
        }
        Ok(())
    }

    /// The generator's adversarial loss and its gradient with respect to `fake`.
    pub fn generator_grad(
        &self,
        real: &Tensor,
        fake: &Tensor,
        seed: u64,
    ) -> crate::Result<(f64, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Var::from_tensor(fake).map_err(cerr)?;
        let la = self.g_loss(real, x.as_tensor(), &mut rng).map_err(cerr)?;
        let value = la.to_scalar::<f32>().map_err(cerr)? as f64;
        let grads = la.backward().map_err(cerr)?;
        let g = grads.get(x.as_tensor()).cloned().ok_or_else(|| {
            crate::Error::Invalid("no gradient reached the generated images".into())
        })?;
        Ok((value, g))
    }

    /// Differentiable augmentation: colour (brightness, saturation, contrast), translation
    /// with zero (mid-gray) fill, cutout.
    pub fn augment(&self, x: &Tensor, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let dev = x.device();
        let mut x = x.clone();
        let s = self.cfg.aug_color;
        if s > 0.0 {
            let per = |rng: &mut ChaCha8Rng, r: f64| -> Vec<f32> {
                (0..b)
                    .map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * r as f32)
                    .collect()
            };
            let bright = Tensor::from_vec(per(rng, 0.2 * s), (b, 1, 1, 1), dev)?;
            x = x.broadcast_add(&bright)?;
            let sat = Tensor::from_vec(per(rng, s), (b, 1, 1, 1), dev)?;
            let mean_c = x.mean_keepdim(1)?;
            x = (x.broadcast_sub(&mean_c)?.broadcast_mul(&(sat + 1.0)?)?).broadcast_add(&mean_c)?;
            let con = Tensor::from_vec(per(rng, 0.5 * s), (b, 1, 1, 1), dev)?;
            let mean_all = x.mean_keepdim(1)?.mean_keepdim(2)?.mean_keepdim(3)?;
            x = (x.broadcast_sub(&mean_all)?.broadcast_mul(&(con + 1.0)?)?)
                .broadcast_add(&mean_all)?;
        }
        let t = (self.cfg.aug_translate * h as f64).round() as usize;
        if t > 0 {
            let padded = x.pad_with_zeros(2, t, t)?.pad_with_zeros(3, t, t)?;
            let mut rows = Vec::with_capacity(b);
            for i in 0..b {
                let dy = rng.random_range(0..=2 * t);
                let dx = rng.random_range(0..=2 * t);
                rows.push(padded.narrow(0, i, 1)?.narrow(2, dy, h)?.narrow(3, dx, w)?);
            }
            x = Tensor::cat(&rows, 0)?;
        }
        let k = (self.cfg.aug_cutout * h as f64).round() as usize;
        if k > 0 {
            let mut mask = vec![1f32; b * h * w];
            for i in 0..b {
                let cy = rng.random_range(0..h) as isize - (k / 2) as isize;
                let cx = rng.random_range(0..w) as isize - (k / 2) as isize;
                for y in cy.max(0)..(cy + k as isize).min(h as isize) {
                    for xx in cx.max(0)..(cx + k as isize).min(w as isize) {
                        mask[i * h * w + y as usize * w + xx as usize] = 0.0;
                    }
                }
            }
            let m = Tensor::from_vec(mask, (b, 1, h, w), dev)?;
            x = x.broadcast_mul(&m)?;
        }
        Ok(x)
    }

    /// Everything trainable and the EMA twins, by name (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("var.{i}"), v.as_tensor().clone()))
            .collect();
        out.extend(
            self.ema
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("ema.{i}"), t.clone())),
        );
        out.extend(self.opt.state("opt."));
        out
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.opt.steps()
    }

    /// Restore [`Discriminator::state`].
    pub fn restore(
        &mut self,
        get: &dyn Fn(&str) -> Option<Tensor>,
        steps: u64,
    ) -> Result<(), String> {
        for (i, v) in self.vars.iter().enumerate() {
            let t = get(&format!("var.{i}")).ok_or(format!("missing var.{i}"))?;
            v.set(&t).map_err(|e| e.to_string())?;
        }
        for i in 0..self.ema.len() {
            self.ema[i] = get(&format!("ema.{i}")).ok_or(format!("missing ema.{i}"))?;
        }
        self.opt.restore(get, "opt.", steps)
    }

    /// The EMA twins (for tests).
    pub fn ema_tensors(&self) -> &[Tensor] {
        &self.ema
    }

    /// The online head parameters (for tests).
    pub fn head_tensors(&self) -> Vec<Tensor> {
        self.vars[..2 * self.blocks]
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect()
    }
}

fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    // log(1 + e^x) = max(x, 0) + log(1 + e^{-|x|})
    let relu = x.relu()?;
    let neg_abs = x.abs()?.neg()?;
    relu + (neg_abs.exp()? + 1.0)?.log()?
}

fn cosine(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / ((na * nb)? + 1e-8)?
}

fn mean(x: &Tensor) -> candle_core::Result<f64> {
    Ok(x.mean_all()?.to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed random conv as a stand-in backbone (two blocks).
    struct Toy(Tensor, Tensor);

    impl Backbone for Toy {
        fn name(&self) -> &str {
            "toy"
        }
        fn channels(&self) -> Vec<usize> {
            vec![8, 8]
        }
        fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
            let a = x.conv2d(&self.0, 1, 2, 1, 1)?.relu()?;
            let b = a.conv2d(&self.1, 1, 2, 1, 1)?.relu()?;
            Ok(vec![a, b])
        }
    }

    fn toy(dev: &Device) -> Box<dyn Backbone> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>() - 0.5).collect() };
        Box::new(Toy(
            Tensor::from_vec(r(8 * 3 * 9), (8, 3, 3, 3), dev).unwrap(),
            Tensor::from_vec(r(8 * 8 * 9), (8, 8, 3, 3), dev).unwrap(),
        ))
    }

    fn images(seed: u64, dev: &Device) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..4 * 3 * 16 * 16)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, (4, 3, 16, 16), dev).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn ema_twins_follow_the_rule() {
        let dev = Device::Cpu;
        let cfg = DiscConfig {
            dim: 16,
            tau: 0.9,
            ..Default::default()
        };
        let mut d = Discriminator::new(toy(&dev), cfg, 0, &dev).unwrap();
        let (real, fake) = (images(1, &dev), images(2, &dev));
        for step in 0..3 {
            let before: Vec<Vec<f32>> = d.ema_tensors().iter().map(flat).collect();
            d.train_step(&real, &fake, step, 1e-2).unwrap();
            let heads: Vec<Vec<f32>> = d.head_tensors().iter().map(flat).collect();
            for ((e, b), h) in d.ema_tensors().iter().zip(&before).zip(&heads) {
                for ((e, b), h) in flat(e).iter().zip(b).zip(h) {
                    let want = 0.9 * b + 0.1 * h;
                    assert!((e - want).abs() < 1e-6, "{e} vs {want}");
                }
            }
        }
    }

    #[test]
    fn discriminator_learns_to_separate_and_the_generator_gradient_reaches_the_images() {
        let dev = Device::Cpu;
        for loss in [DiscLoss::Siamese, DiscLoss::Hinge, DiscLoss::NonSaturating] {
            let cfg = DiscConfig {
                dim: 16,
                loss,
                lr: 3e-3,
                ..Default::default()
            };
            let mut d = Discriminator::new(toy(&dev), cfg, 0, &dev).unwrap();
            let real = images(1, &dev);
            // "Generated" images: the real ones, darkened.
            let fake = ((&real * 0.3).unwrap() - 0.6).unwrap();
            let first = d.train_step(&real, &fake, 0, 3e-3).unwrap();
            let mut last = first;
            for s in 1..60 {
                last = d.train_step(&real, &fake, s, 3e-3).unwrap();
            }
            assert!(
                last.real - last.fake > first.real - first.fake,
                "{loss:?}: gap {:.4} → {:.4}",
                first.real - first.fake,
                last.real - last.fake
            );
            let (la, g) = d.generator_grad(&real, &fake, 99).unwrap();
            assert!(la.is_finite());
            assert_eq!(g.dims(), fake.dims());
            let n: f32 = flat(&g).iter().map(|v| v * v).sum();
            assert!(n > 0.0, "{loss:?}: zero generator gradient");
        }
    }

    #[test]
    fn augmentation_is_differentiable_and_seeded() {
        let dev = Device::Cpu;
        let d = Discriminator::new(toy(&dev), DiscConfig::default(), 0, &dev).unwrap();
        let x = Var::from_tensor(&images(3, &dev)).unwrap();
        let a = d
            .augment(x.as_tensor(), &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        let b = d
            .augment(x.as_tensor(), &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        assert_eq!(flat(&a), flat(&b));
        let g = a.sum_all().unwrap().backward().unwrap();
        assert!(
            flat(g.get(x.as_tensor()).unwrap())
                .iter()
                .any(|v| *v != 0.0)
        );
    }
}
