//! The tiny model's stride-1 "same" convolution on the CPU: NCHW in and out, one GEMM per
//! image over its patch matrix, with a backward made of the same pieces.
//!
//! For image `b` let `Col_b` be the `(cin·k·k) × (H·W)` patch matrix (row `(ci, ky, kx)` is
//! channel `ci` shifted by `(ky − p, kx − p)`, zero outside; for `k = 1` it is the image
//! itself). Then
//!
//! * forward: `Y_b = W · Col_b`, written straight into the NCHW output (`W` is the kernel as
//!   a `cout × (cin·k·k)` matrix, its natural OIHW layout);
//! * input gradient: the same forward with the flipped, transposed kernel (a stride-1 "same"
//!   convolution's adjoint);
//! * kernel gradient: `Σ_b G_b · Col_bᵀ`, one product per image summed in image order.
//!
//! Images are spread over the rayon pool, each image's product sequential on one thread, and
//! the kernel gradient sums the images in order: an image's results do not depend on the
//! batch it is in or on the number of threads. candle's own CPU `conv2d` (a tiled im2col with
//! scalar gathers and a transpose of the input) is kept as the reference: [`crate::ops::set_reference`] switches
//! to it, for the benchmark that compares the two.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::ops::{reference, slice};

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// Shapes of one convolution: `x [n, cin, h, w]`, `w [cout, cin, k, k]`.
#[derive(Clone, Copy)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
}

impl Geom {
    fn new(lx: &Layout, lw: &Layout) -> Result<Self> {
        let (n, cin, h, w) = dims4(lx)?;
        let (cout, cin2, kh, kw) = dims4(lw)?;
        if cin2 != cin || kh != kw || kh % 2 == 0 {
            candle_core::bail!(
                "tiny conv: kernel [{cout}, {cin2}, {kh}, {kw}] does not fit input channels {cin} \
                 (square, odd kernels only)"
            );
        }
        Ok(Geom {
            n,
            cin,
            h,
            w,
            cout,
            k: kh,
        })
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn kdim(&self) -> usize {
        self.cin * self.k * self.k
    }
}

/// `Col` of one image (`cin·h·w` values, NCHW) into `col` (`(cin·k·k) × (h·w)`).
fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (h, w, k) = (g.h, g.w, g.k);
    let p = k / 2;
    let hw = h * w;
    for ci in 0..g.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * hw..][..hw];
                // Output (y, x) reads input (y + ky − p, x + kx − p).
                let (x0, x1) = (p.saturating_sub(kx), (w + p - kx).min(w));
                for y in 0..h {
                    let dst = &mut row[y * w..(y + 1) * w];
                    let iy = y + ky;
                    if iy < p || iy - p >= h || x0 >= x1 {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[(iy - p) * w..(iy - p + 1) * w];
                    dst[..x0].fill(0.0);
                    dst[x1..].fill(0.0);
                    dst[x0..x1].copy_from_slice(&src[x0 + kx - p..x1 + kx - p]);
                }
            }
        }
    }
}

/// The patch matrix of image `b` of `x`: the image itself for a 1×1 kernel, else built in
/// `col`.
fn patches<'a>(g: &Geom, x: &'a [f32], b: usize, col: &'a mut Vec<f32>) -> &'a [f32] {
    let (hw, kd) = (g.hw(), g.kdim());
    let xb = &x[b * g.cin * hw..(b + 1) * g.cin * hw];
    if g.k == 1 {
        return xb;
    }
    col.resize(kd * hw, 0.0);
    im2col(g, xb, col);
    &col[..]
}

/// Forward: `y [n, cout, h, w]`.
fn forward(g: &Geom, x: &[f32], wt: &[f32]) -> Vec<f32> {
    let (hw, kd) = (g.hw(), g.kdim());
    let mut y = vec![0f32; g.n * g.cout * hw];
    let wm = MatRef::from_row_major_slice(wt, g.cout, kd);
    y.par_chunks_mut(g.cout * hw)
        .enumerate()
        .for_each_init(Vec::new, |col, (b, yb)| {
            let cm = MatRef::from_row_major_slice(patches(g, x, b, col), kd, hw);
            let mut d = MatMut::from_row_major_slice_mut(yb, g.cout, hw);
            faer::linalg::matmul::matmul(&mut d, Accum::Replace, wm, cm, 1.0f32, Par::Seq);
        });
    y
}

/// Kernel gradient `[cout, cin, k, k]` = `Σ_b G_b · Col_bᵀ`.
fn grad_kernel(g: &Geom, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (hw, kd) = (g.hw(), g.kdim());
    let parts: Vec<Vec<f32>> = (0..g.n)
        .into_par_iter()
        .map_init(Vec::new, |col, b| {
            let cmt = MatRef::from_row_major_slice(patches(g, x, b, col), kd, hw).transpose();
            let gm = MatRef::from_row_major_slice(
                &gy[b * g.cout * hw..(b + 1) * g.cout * hw],
                g.cout,
                hw,
            );
            let mut out = vec![0f32; g.cout * kd];
            let mut d = MatMut::from_row_major_slice_mut(&mut out, g.cout, kd);
            faer::linalg::matmul::matmul(&mut d, Accum::Replace, gm, cmt, 1.0f32, Par::Seq);
            out
        })
        .collect();
    // Summed in image order: the same bits whatever the thread count.
    let mut acc = vec![0f32; g.cout * kd];
    for p in &parts {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

/// `y = conv(x, w)`, stride 1, padding `k / 2`. Its backward is [`SameConvGradKernel`] and
/// this op again with the flipped, transposed kernel.
pub struct SameConv;

impl CustomOp2 for SameConv {
    fn name(&self) -> &'static str {
        "tiny-same-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1, l2)?;
        let shape = Shape::from((g.n, g.cout, g.h, g.w));
        if reference() {
            let x = Tensor::from_slice(slice(s1, l1)?, l1.shape(), &Device::Cpu)?;
            let w = Tensor::from_slice(slice(s2, l2)?, l2.shape(), &Device::Cpu)?;
            let y = x.conv2d(&w, g.k / 2, 1, 1, 1)?;
            return Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape));
        }
        let y = forward(&g, slice(s1, l1)?, slice(s2, l2)?);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = same_conv(&grad, &flip_transpose(w)?)?;
        let gw = if reference() {
            let p = w.dim(2)? / 2;
            x.transpose(0, 1)?
                .contiguous()?
                .conv2d(&grad.transpose(0, 1)?.contiguous()?, p, 1, 1, 1)?
                .transpose(0, 1)?
                .contiguous()?
        } else {
            x.contiguous()?
                .apply_op2_no_bwd(&grad, &SameConvGradKernel(w.dim(2)?))?
        };
        Ok((Some(gx), Some(gw)))
    }
}

/// The kernel gradient of [`SameConv`]: `(x, grad) → [cout, cin, k, k]` for kernel side `.0`.
struct SameConvGradKernel(usize);

impl CustomOp2 for SameConvGradKernel {
    fn name(&self) -> &'static str {
        "tiny-same-conv2d-grad-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cin, h, w) = dims4(l1)?;
        let (n2, cout, h2, w2) = dims4(l2)?;
        if (n2, h2, w2) != (n, h, w) {
            candle_core::bail!("tiny conv gradient: input and output gradient shapes differ");
        }
        let g = Geom {
            n,
            cin,
            h,
            w,
            cout,
            k: self.0,
        };
        let gw = grad_kernel(&g, slice(s1, l1)?, slice(s2, l2)?);
        Ok((CpuStorage::F32(gw), Shape::from((cout, cin, g.k, g.k))))
    }
}

/// `w [cout, cin, k, k]` → `[cin, cout, k, k]` flipped in both spatial axes.
fn flip_transpose(w: &Tensor) -> Result<Tensor> {
    let k = w.dim(2)?;
    let rev = Tensor::from_vec((0..k as u32).rev().collect::<Vec<_>>(), k, w.device())?;
    w.index_select(&rev, 2)?
        .index_select(&rev, 3)?
        .transpose(0, 1)?
        .contiguous()
}

/// Stride-1 "same" convolution with gradients: the GEMM path on CPU f32, candle's `conv2d`
/// elsewhere.
pub fn same_conv(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&w.contiguous()?, SameConv)
    } else {
        x.conv2d(w, w.dim(2)? / 2, 1, 1, 1)
    }
}
