//! Per-channel ops of the tiny model with hand-written backward passes, for the CPU.
//!
//! Written out in candle primitives, a GroupNorm is about ten passes over the activations
//! forward and twice that backward, and every per-channel broadcast (a convolution's bias,
//! the norm's affine) is differentiated by candle's strided `sum_keepdim` over the batch and
//! both spatial axes, its slowest reduction. These ops do each in one or two contiguous
//! passes per `(image, channel)` plane. Reductions over images run in image order, so the
//! results do not depend on the thread count. Other devices and dtypes use the written-out
//! forms ([`crate::net::group_norm_reference`] is the norm's), which the gradient tests
//! compare these with.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

static REFERENCE: AtomicBool = AtomicBool::new(false);

/// Process-wide: compute with candle's own ops instead of this crate's CPU ops (candle's
/// `conv2d` with its backward built from forward convolutions, the written-out GroupNorm,
/// broadcast biases). For the benchmark that compares the two; results agree to rounding.
pub fn set_reference(on: bool) {
    REFERENCE.store(on, Ordering::SeqCst);
}

/// Whether [`set_reference`] is on.
pub fn reference() -> bool {
    REFERENCE.load(Ordering::SeqCst)
}

/// The contiguous f32 values of a custom op's CPU input.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("tiny CPU ops expect contiguous inputs".into()))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn cpu_f32(ts: &[&Tensor]) -> bool {
    !reference()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Per-(image, channel) sums of a contiguous `[n, c, hw]` array, then summed over images in
/// order: `[c]`.
fn channel_sums(v: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let per: Vec<f32> = v.par_chunks(hw).map(|p| p.iter().sum()).collect();
    let mut out = vec![0f32; c];
    for img in 0..n {
        for (o, s) in out.iter_mut().zip(&per[img * c..(img + 1) * c]) {
            *o += s;
        }
    }
    out
}

/// `x [n, c, h, w] + b [c]` (a convolution's bias).
struct ChannelBias;

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "tiny-channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let (x, b) = (slice(s1, l1)?, slice(s2, l2)?);
        if b.len() != c {
            candle_core::bail!("bias of {} values for {c} channels", b.len());
        }
        let hw = h * w;
        let mut y = x.to_vec();
        y.par_chunks_mut(hw).enumerate().for_each(|(i, p)| {
            let bv = b[i % c];
            p.iter_mut().for_each(|v| *v += bv);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let gb = channel_sums(&host(grad)?, n, c, h * w);
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(gb, b.shape(), b.device())?),
        ))
    }
}

/// `x + b` per channel, `x [n, c, h, w]`, `b [c]`, with gradients.
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[x, b]) {
        x.contiguous()?.apply_op2(&b.contiguous()?, ChannelBias)
    } else {
        x.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)
    }
}

/// GroupNorm with a per-channel affine: `groups`, `eps`.
struct GroupNorm {
    groups: usize,
    eps: f64,
}

/// Shapes of a GroupNorm call.
#[derive(Clone, Copy)]
struct Gn {
    n: usize,
    c: usize,
    hw: usize,
    /// Channels per group.
    cg: usize,
}

impl Gn {
    fn new(x: &Shape, groups: usize) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        let g = groups.min(c).max(1);
        if c % g != 0 {
            candle_core::bail!("GroupNorm: {c} channels do not split into {g} groups");
        }
        Ok(Gn {
            n,
            c,
            hw: h * w,
            cg: c / g,
        })
    }
    /// Values per group.
    fn len(&self) -> usize {
        self.cg * self.hw
    }
}

/// Mean and 1/σ of one group's values (two passes, f64 accumulation).
fn moments(v: &[f32], eps: f64) -> (f32, f32) {
    let len = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / len;
    let var = v
        .iter()
        .map(|&x| {
            let d = x as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / len;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "tiny-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Gn::new(l1.shape(), self.groups)?;
        let (x, wt, bs) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        if wt.len() != g.c || bs.len() != g.c {
            candle_core::bail!(
                "GroupNorm affine of {}/{} values for {} channels",
                wt.len(),
                bs.len(),
                g.c
            );
        }
        let mut y = vec![0f32; x.len()];
        let groups = g.c / g.cg;
        y.par_chunks_mut(g.len())
            .zip(x.par_chunks(g.len()))
            .enumerate()
            .for_each(|(i, (yg, xg))| {
                let (mean, inv) = moments(xg, self.eps);
                let c0 = (i % groups) * g.cg;
                for (j, (yp, xp)) in yg.chunks_mut(g.hw).zip(xg.chunks(g.hw)).enumerate() {
                    let (a, b) = (wt[c0 + j] * inv, bs[c0 + j]);
                    for (o, v) in yp.iter_mut().zip(xp) {
                        *o = (v - mean) * a + b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        bs: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Gn::new(x.shape(), self.groups)?;
        let (xv, gy, w) = (host(x)?, host(grad)?, host(wt)?);
        let groups = g.c / g.cg;
        let mut gx = vec![0f32; xv.len()];
        // Per (image, channel): Σ gy·x̂ and Σ gy, for the affine's gradients.
        let mut per = vec![(0f32, 0f32); g.n * g.c];
        gx.par_chunks_mut(g.len())
            .zip(per.par_chunks_mut(g.cg))
            .zip(xv.par_chunks(g.len()).zip(gy.par_chunks(g.len())))
            .enumerate()
            .for_each(|(i, ((gxg, pg), (xg, gyg)))| {
                let (mean, inv) = moments(xg, self.eps);
                let c0 = (i % groups) * g.cg;
                // dx̂ = gy·w; dx = inv · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)).
                let (mut s1, mut s2) = (0f64, 0f64);
                for (j, (xp, gp)) in xg.chunks(g.hw).zip(gyg.chunks(g.hw)).enumerate() {
                    let wc = w[c0 + j];
                    let (mut sxh, mut sg) = (0f32, 0f32);
                    for (&xv, &gv) in xp.iter().zip(gp) {
                        let xh = (xv - mean) * inv;
                        sxh += gv * xh;
                        sg += gv;
                    }
                    pg[j] = (sxh, sg);
                    s1 += (wc * sg) as f64;
                    s2 += (wc * sxh) as f64;
                }
                let len = g.len() as f64;
                let (m1, m2) = ((s1 / len) as f32, (s2 / len) as f32);
                for (j, (gxp, (xp, gp))) in gxg
                    .chunks_mut(g.hw)
                    .zip(xg.chunks(g.hw).zip(gyg.chunks(g.hw)))
                    .enumerate()
                {
                    let wc = w[c0 + j];
                    for (o, (&xv, &gv)) in gxp.iter_mut().zip(xp.iter().zip(gp)) {
                        let xh = (xv - mean) * inv;
                        *o = inv * (gv * wc - m1 - xh * m2);
                    }
                }
            });
        let (mut gw, mut gb) = (vec![0f32; g.c], vec![0f32; g.c]);
        for img in per.chunks(g.c) {
            for (c, (a, b)) in img.iter().enumerate() {
                gw[c] += a;
                gb[c] += b;
            }
        }
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), x.device())?),
            Some(Tensor::from_vec(gw, wt.shape(), wt.device())?),
            Some(Tensor::from_vec(gb, bs.shape(), bs.device())?),
        ))
    }
}

/// GroupNorm of `x [n, c, h, w]` over `groups` groups with the affine `weight`, `bias` (`[c]`),
/// with gradients to all three. `None` where the op does not apply (not CPU f32): the caller
/// uses the written-out form.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> Option<Result<Tensor>> {
    if !cpu_f32(&[x, weight, bias]) {
        return None;
    }
    Some((|| {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            GroupNorm { groups, eps },
        )
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn randn(shape: &[usize], seed: u64, shift: f32) -> Var {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0f32, 1.0).unwrap();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| d.sample(&mut rng) + shift).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// The gradients of Σ y·cot: the vector–Jacobian product of `y` with `cot`.
    fn vjp(y: &Tensor, cot: &Var) -> candle_core::backprop::GradStore {
        (y * cot.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        (d.to_scalar().unwrap(), s.to_scalar().unwrap())
    }

    /// Forward and every gradient of the op equal the written-out candle form (whose
    /// backward is candle's), for several shapes and group counts, with a shifted input
    /// (a mean far from zero tests the two-pass moments).
    #[test]
    fn group_norm_matches_the_written_out_form_with_gradients() {
        for (n, c, h, w, groups) in [
            (2usize, 8usize, 5usize, 4usize, 4usize),
            (3, 6, 3, 3, 2),
            (1, 4, 7, 2, 8),
        ] {
            let x = randn(&[n, c, h, w], 1, 3.0);
            let wt = randn(&[c], 2, 1.0);
            let bs = randn(&[c], 3, 0.0);
            let cot = randn(&[n, c, h, w], 4, 0.0);
            let ours = group_norm(x.as_tensor(), wt.as_tensor(), bs.as_tensor(), groups, 1e-5)
                .expect("applies on CPU f32")
                .unwrap();
            let theirs = crate::net::group_norm_reference(
                x.as_tensor(),
                wt.as_tensor(),
                bs.as_tensor(),
                groups,
            )
            .unwrap();
            let (d, s) = max_diff(&ours, &theirs);
            assert!(d < 1e-4 * s.max(1.0), "forward differs by {d}");
            let (g1, g2) = (vjp(&ours, &cot), vjp(&theirs, &cot));
            for (name, v) in [("x", &x), ("weight", &wt), ("bias", &bs)] {
                let a = g1
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient to {name}"));
                let b = g2.get(v.as_tensor()).unwrap();
                let (d, s) = max_diff(a, b);
                assert!(
                    d < 2e-4 * s.max(1.0),
                    "{name}: gradient differs by {d} (scale {s})"
                );
            }
        }
    }

    /// The bias op's forward and gradients equal candle's broadcast add.
    #[test]
    fn channel_bias_matches_broadcast_add_with_gradients() {
        let x = randn(&[3, 5, 4, 2], 5, 0.0);
        let b = randn(&[5], 6, 0.0);
        let cot = randn(&[3, 5, 4, 2], 7, 0.0);
        let ours = add_channel_bias(x.as_tensor(), b.as_tensor()).unwrap();
        let theirs = x
            .as_tensor()
            .broadcast_add(&b.as_tensor().reshape((1, 5, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(max_diff(&ours, &theirs).0, 0.0);
        let (g1, g2) = (vjp(&ours, &cot), vjp(&theirs, &cot));
        for v in [&x, &b] {
            let (d, s) = max_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-5 * s.max(1.0), "gradient differs by {d}");
        }
    }
}
