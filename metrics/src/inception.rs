//! The FID Inception network (TF `inception-2015-12-05`, pytorch-fid's `FIDInceptionA/C/E`
//! patches): 299×299 RGB in, 2048-d `pool_3` features out.
//!
//! Two forward passes share the weights:
//!
//! * [`Inception::features`] — the CPU path: NHWC activations, batch norm folded into the
//!   convolutions, every convolution one GEMM (faer) over row chunks of im2col patches with the
//!   bias and ReLU fused, branch outputs written in place into their block's concatenation.
//!   Chunks never straddle two images and are cut the same way whatever the batch, so an
//!   image's features do not depend on the batch it is in (bit for bit).
//! * [`Inception::features_candle`] — the same network on candle tensors (NCHW `conv2d`), for
//!   any candle device; on CPU it is the cross-check of the fast path.

use candle_core::{DType, Device, Tensor};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::arch::{
    BLOCKS, Block, ConvSpec, DIMS, INPUT, PoolBranch, a_convs, b_convs, c_convs, d_convs, e_convs,
};
use crate::weights::InceptionWeights;
use crate::{Error, Result};

/// Target size of one im2col chunk in floats (fits a core's L2 with room for the weights).
const CHUNK_FLOATS: usize = 96 * 1024;

struct Conv {
    spec: ConvSpec,
    /// GEMM right-hand side, `[(ky, kx, ci), co]` row-major.
    w: Vec<f32>,
    /// Folded bias.
    b: Vec<f32>,
    /// Folded weights in OIHW for the candle path.
    w_oihw: Vec<f32>,
}

/// The network with folded weights.
pub struct Inception {
    /// Keyed by (block, branch).
    convs: std::collections::HashMap<(&'static str, &'static str), Conv>,
    sha256: String,
    /// The candle path's weights, uploaded once per device (keyed by layer and device).
    on_device: std::sync::Mutex<std::collections::HashMap<(String, String), (Tensor, Tensor)>>,
    /// Activation buffers of finished passes, reused by the next one without clearing (fresh,
    /// zero-filled allocations of this size took ≈ 8 % of a pass: new pages to fault in and
    /// clear). Holds at most one pass's working set; released with the network.
    spare: std::sync::Mutex<Vec<Vec<f32>>>,
}

/// NHWC activations.
#[derive(Debug, Clone)]
pub struct Act {
    /// Images.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n·h·w·c` values.
    pub data: Vec<f32>,
}

impl Inception {
    /// Build the network from validated weights.
    pub fn new(weights: &InceptionWeights) -> Self {
        let mut convs = std::collections::HashMap::new();
        for spec in crate::arch::all_convs() {
            let (wf, bf) = weights.folded(&spec);
            let (cin, cout, kh, kw) = (spec.cin, spec.cout, spec.kh, spec.kw);
            let mut w = vec![0f32; wf.len()];
            for co in 0..cout {
                for ci in 0..cin {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            w[((ky * kw + kx) * cin + ci) * cout + co] =
                                wf[((co * cin + ci) * kh + ky) * kw + kx];
                        }
                    }
                }
            }
            convs.insert(
                (spec.block, spec.branch),
                Conv {
                    spec,
                    w,
                    b: bf,
                    w_oihw: wf,
                },
            );
        }
        Inception {
            convs,
            sha256: weights.sha256().to_string(),
            on_device: Default::default(),
            spare: Default::default(),
        }
    }

    /// The weights' hash.
    pub fn weights_sha256(&self) -> &str {
        &self.sha256
    }

    /// Features of a batch of preprocessed images, NHWC `[n, 299, 299, 3]` (already
    /// normalised by the mode). Returns `n × 2048` values.
    pub fn features(&self, x: &Act) -> Result<Vec<f32>> {
        if x.h != INPUT || x.w != INPUT || x.c != 3 || x.data.len() != x.n * x.h * x.w * x.c {
            return Err(Error::Mismatch(format!(
                "Inception input must be [n, {INPUT}, {INPUT}, 3], got [{}, {}, {}, {}]",
                x.n, x.h, x.w, x.c
            )));
        }
        let mut cur: Option<Act> = None;
        for block in BLOCKS {
            let input = cur.as_ref().unwrap_or(x);
            let next = match block {
                Block::Conv(s) => self.conv(input, &s),
                Block::MaxPool => {
                    let (ho, wo) = ((input.h - 3) / 2 + 1, (input.w - 3) / 2 + 1);
                    let mut out = self.scratch(input.n, ho, wo, input.c);
                    max_pool_3x3_s2_into(input, &mut out, 0);
                    out
                }
                Block::A { name, cin, pool } => self.block_a(input, &a_convs(name, cin, pool)),
                Block::B { name, cin } => self.block_b(input, &b_convs(name, cin)),
                Block::C { name, c7 } => self.block_c(input, &c_convs(name, c7)),
                Block::D { name } => self.block_d(input, &d_convs(name)),
                Block::E { name, cin, pool } => self.block_e(input, &e_convs(name, cin), pool),
            };
            if let Some(done) = cur.replace(next) {
                self.give(done);
            }
        }
        let last = cur.unwrap_or_else(|| x.clone());
        let features = global_avg_pool(&last);
        self.give(last);
        Ok(features)
    }

    fn layer(&self, s: &ConvSpec) -> &Conv {
        &self.convs[&(s.block, s.branch)]
    }

    /// An activation buffer for `n·h·w·c` values, reused from an earlier pass where one is
    /// spare (old values left in place for the producer to overwrite).
    fn scratch(&self, n: usize, h: usize, w: usize, c: usize) -> Act {
        let len = n * h * w * c;
        let reuse = {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest spare buffer that holds `len`.
            let best = spare
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| spare.swap_remove(i))
        };
        let mut data = reuse.unwrap_or_default();
        // A reused buffer keeps its old values: every producer (convolution, pooling, the
        // blocks' concatenations) writes each element of its output.
        data.truncate(len);
        data.resize(len, 0.0);
        Act { n, h, w, c, data }
    }

    /// Returns an activation's buffer for reuse.
    fn give(&self, a: Act) {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a.data);
    }

    fn conv(&self, x: &Act, s: &ConvSpec) -> Act {
        let l = self.layer(s);
        let (ho, wo) = out_hw(x, &l.spec);
        let mut out = self.scratch(x.n, ho, wo, l.spec.cout);
        conv_into(x, l, &mut out, 0);
        out
    }

    /// `conv(conv(x, a), b)`, the intermediate's buffer returned.
    fn conv2(&self, x: &Act, a: &ConvSpec, b: &ConvSpec) -> Act {
        let t = self.conv(x, a);
        let out = self.conv(&t, b);
        self.give(t);
        out
    }

    /// The 3×3 stride-1 pooling branch.
    fn pool(&self, x: &Act, kind: PoolBranch) -> Act {
        let mut out = self.scratch(x.n, x.h, x.w, x.c);
        pool_3x3_s1_into(x, kind, &mut out);
        out
    }

    fn conv_to(&self, x: &Act, s: &ConvSpec, out: &mut Act, c_off: usize) {
        conv_into(x, self.layer(s), out, c_off);
    }

    fn block_a(&self, x: &Act, s: &[ConvSpec; 7]) -> Act {
        let c = s[0].cout + s[2].cout + s[5].cout + s[6].cout;
        let mut out = self.scratch(x.n, x.h, x.w, c);
        self.conv_to(x, &s[0], &mut out, 0);
        let t = self.conv(x, &s[1]);
        self.conv_to(&t, &s[2], &mut out, s[0].cout);
        self.give(t);
        let t = self.conv2(x, &s[3], &s[4]);
        self.conv_to(&t, &s[5], &mut out, s[0].cout + s[2].cout);
        self.give(t);
        let p = self.pool(x, PoolBranch::AvgExcludePad);
        self.conv_to(&p, &s[6], &mut out, c - s[6].cout);
        self.give(p);
        out
    }

    fn block_b(&self, x: &Act, s: &[ConvSpec; 4]) -> Act {
        let (ho, wo) = out_hw(x, &s[0]);
        let c = s[0].cout + s[3].cout + x.c;
        let mut out = self.scratch(x.n, ho, wo, c);
        self.conv_to(x, &s[0], &mut out, 0);
        let t = self.conv2(x, &s[1], &s[2]);
        self.conv_to(&t, &s[3], &mut out, s[0].cout);
        self.give(t);
        max_pool_3x3_s2_into(x, &mut out, s[0].cout + s[3].cout);
        out
    }

    fn block_c(&self, x: &Act, s: &[ConvSpec; 10]) -> Act {
        let mut out = self.scratch(x.n, x.h, x.w, 768);
        self.conv_to(x, &s[0], &mut out, 0);
        let t = self.conv2(x, &s[1], &s[2]);
        self.conv_to(&t, &s[3], &mut out, 192);
        self.give(t);
        let mut t = self.conv(x, &s[4]);
        for spec in &s[5..8] {
            let next = self.conv(&t, spec);
            self.give(std::mem::replace(&mut t, next));
        }
        self.conv_to(&t, &s[8], &mut out, 384);
        self.give(t);
        let p = self.pool(x, PoolBranch::AvgExcludePad);
        self.conv_to(&p, &s[9], &mut out, 576);
        self.give(p);
        out
    }

    fn block_d(&self, x: &Act, s: &[ConvSpec; 6]) -> Act {
        let (ho, wo) = out_hw(x, &s[1]);
        let c = s[1].cout + s[5].cout + x.c;
        let mut out = self.scratch(x.n, ho, wo, c);
        let t = self.conv(x, &s[0]);
        self.conv_to(&t, &s[1], &mut out, 0);
        self.give(t);
        let t = self.conv2(x, &s[2], &s[3]);
        let u = self.conv(&t, &s[4]);
        self.give(t);
        self.conv_to(&u, &s[5], &mut out, s[1].cout);
        self.give(u);
        max_pool_3x3_s2_into(x, &mut out, s[1].cout + s[5].cout);
        out
    }

    fn block_e(&self, x: &Act, s: &[ConvSpec; 9], pool: PoolBranch) -> Act {
        let mut out = self.scratch(x.n, x.h, x.w, 2048);
        self.conv_to(x, &s[0], &mut out, 0);
        let a = self.conv(x, &s[1]);
        self.conv_to(&a, &s[2], &mut out, 320);
        self.conv_to(&a, &s[3], &mut out, 704);
        self.give(a);
        let b = self.conv2(x, &s[4], &s[5]);
        self.conv_to(&b, &s[6], &mut out, 1088);
        self.conv_to(&b, &s[7], &mut out, 1472);
        self.give(b);
        let p = self.pool(x, pool);
        self.conv_to(&p, &s[8], &mut out, 1856);
        self.give(p);
        out
    }

    // -----------------------------------------------------------------------------------------
    // The candle path.

    /// The same network on candle tensors. `x`: `[n, 3, 299, 299]` f32 (normalised), on any
    /// device. Returns `[n, 2048]`.
    pub fn features_candle(&self, x: &Tensor) -> Result<Tensor> {
        let dev = x.device().clone();
        let mut cur = x.to_dtype(DType::F32)?;
        for block in BLOCKS {
            cur = match block {
                Block::Conv(s) => self.cconv(&cur, &s, &dev)?,
                Block::MaxPool => cur.max_pool2d_with_stride(3, 2)?,
                Block::A { name, cin, pool } => {
                    let s = a_convs(name, cin, pool);
                    let b0 = self.cconv(&cur, &s[0], &dev)?;
                    let b1 = self.cconv(&self.cconv(&cur, &s[1], &dev)?, &s[2], &dev)?;
                    let b2 = self.cconv(&cur, &s[3], &dev)?;
                    let b2 = self.cconv(&self.cconv(&b2, &s[4], &dev)?, &s[5], &dev)?;
                    let p = cpool(&cur, PoolBranch::AvgExcludePad)?;
                    let b3 = self.cconv(&p, &s[6], &dev)?;
                    Tensor::cat(&[b0, b1, b2, b3], 1)?
                }
                Block::B { name, cin } => {
                    let s = b_convs(name, cin);
                    let b0 = self.cconv(&cur, &s[0], &dev)?;
                    let mut t = cur.clone();
                    for spec in &s[1..4] {
                        t = self.cconv(&t, spec, &dev)?;
                    }
                    let p = cur.max_pool2d_with_stride(3, 2)?;
                    Tensor::cat(&[b0, t, p], 1)?
                }
                Block::C { name, c7 } => {
                    let s = c_convs(name, c7);
                    let b0 = self.cconv(&cur, &s[0], &dev)?;
                    let mut t = cur.clone();
                    for spec in &s[1..4] {
                        t = self.cconv(&t, spec, &dev)?;
                    }
                    let mut u = cur.clone();
                    for spec in &s[4..9] {
                        u = self.cconv(&u, spec, &dev)?;
                    }
                    let p = cpool(&cur, PoolBranch::AvgExcludePad)?;
                    let b3 = self.cconv(&p, &s[9], &dev)?;
                    Tensor::cat(&[b0, t, u, b3], 1)?
                }
                Block::D { name } => {
                    let s = d_convs(name);
                    let mut t = cur.clone();
                    for spec in &s[0..2] {
                        t = self.cconv(&t, spec, &dev)?;
                    }
                    let mut u = cur.clone();
                    for spec in &s[2..6] {
                        u = self.cconv(&u, spec, &dev)?;
                    }
                    let p = cur.max_pool2d_with_stride(3, 2)?;
                    Tensor::cat(&[t, u, p], 1)?
                }
                Block::E { name, cin, pool } => {
                    let s = e_convs(name, cin);
                    let b0 = self.cconv(&cur, &s[0], &dev)?;
                    let a = self.cconv(&cur, &s[1], &dev)?;
                    let a1 = self.cconv(&a, &s[2], &dev)?;
                    let a2 = self.cconv(&a, &s[3], &dev)?;
                    let b = self.cconv(&cur, &s[4], &dev)?;
                    let b = self.cconv(&b, &s[5], &dev)?;
                    let b1 = self.cconv(&b, &s[6], &dev)?;
                    let b2 = self.cconv(&b, &s[7], &dev)?;
                    let p = cpool(&cur, pool)?;
                    let b3 = self.cconv(&p, &s[8], &dev)?;
                    Tensor::cat(&[b0, a1, a2, b1, b2, b3], 1)?
                }
            };
        }
        let n = cur.dim(0)?;
        Ok(cur.mean_keepdim(3)?.mean_keepdim(2)?.reshape((n, DIMS))?)
    }

    fn cconv(&self, x: &Tensor, s: &ConvSpec, dev: &Device) -> Result<Tensor> {
        let l = self.layer(s);
        let s = l.spec;
        let key = (
            format!("{}/{}", s.block, s.branch),
            format!("{:?}", dev.location()),
        );
        let cached = self
            .on_device
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        let (w, b) = match cached {
            Some(wb) => wb,
            None => {
                let w = Tensor::from_slice(&l.w_oihw, (s.cout, s.cin, s.kh, s.kw), dev)?;
                let b = Tensor::from_slice(&l.b, (1, s.cout, 1, 1), dev)?;
                if let Ok(mut m) = self.on_device.lock() {
                    m.insert(key, (w.clone(), b.clone()));
                }
                (w, b)
            }
        };
        let x = if s.ph > 0 || s.pw > 0 {
            x.pad_with_zeros(2, s.ph, s.ph)?
                .pad_with_zeros(3, s.pw, s.pw)?
        } else {
            x.clone()
        };
        Ok(x.conv2d(&w, 0, s.stride, 1, 1)?.broadcast_add(&b)?.relu()?)
    }
}

/// 3×3 stride-1 pool with padding 1 on candle tensors (NCHW).
fn cpool(x: &Tensor, kind: PoolBranch) -> Result<Tensor> {
    match kind {
        PoolBranch::Max => {
            let (n, c, h, w) = x.dims4()?;
            let neg = Tensor::full(f32::NEG_INFINITY, (n, c, 1, w), x.device())?;
            let x = Tensor::cat(&[&neg, x, &neg], 2)?;
            let negc = Tensor::full(f32::NEG_INFINITY, (n, c, h + 2, 1), x.device())?;
            let x = Tensor::cat(&[&negc, &x, &negc], 3)?;
            Ok(x.max_pool2d_with_stride(3, 1)?)
        }
        PoolBranch::AvgExcludePad => {
            let (_, _, h, w) = x.dims4()?;
            let sum = x
                .pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .avg_pool2d_with_stride(3, 1)?;
            // Number of real (unpadded) pixels under each window.
            let mut cnt = vec![0f32; h * w];
            for y in 0..h {
                for xx in 0..w {
                    let ny = (y + 2).min(h) - y.saturating_sub(1);
                    let nx = (xx + 2).min(w) - xx.saturating_sub(1);
                    cnt[y * w + xx] = 9.0 / (ny * nx) as f32;
                }
            }
            let scale = Tensor::from_vec(cnt, (1, 1, h, w), x.device())?;
            Ok(sum.broadcast_mul(&scale)?)
        }
    }
}

fn out_hw(x: &Act, s: &ConvSpec) -> (usize, usize) {
    (
        (x.h + 2 * s.ph - s.kh) / s.stride + 1,
        (x.w + 2 * s.pw - s.kw) / s.stride + 1,
    )
}

/// `out[.., c_off..c_off+cout] = relu(conv(x) + b)`.
fn conv_into(x: &Act, l: &Conv, out: &mut Act, c_off: usize) {
    let s = l.spec;
    let (ho, wo) = out_hw(x, &s);
    debug_assert_eq!((out.n, out.h, out.w), (x.n, ho, wo));
    debug_assert_eq!(x.c, s.cin);
    let k = s.kh * s.kw * s.cin;
    let pointwise = s.kh == 1 && s.kw == 1 && s.stride == 1;
    let per_image = ho * wo;
    // Rows per chunk: the same cut for every image, whatever the batch.
    let rows = (CHUNK_FLOATS / k.max(s.cout)).clamp(16, per_image.max(16));
    let chunks_per_image = per_image.div_ceil(rows);
    let oc = out.c;
    let rhs = MatRef::from_row_major_slice(&l.w, k, s.cout);
    // Split the output into per-image slices, then into row chunks.
    let tasks: Vec<(usize, usize, &mut [f32])> = out
        .data
        .chunks_mut(per_image * oc)
        .enumerate()
        .flat_map(|(img, slab)| {
            slab.chunks_mut(rows * oc)
                .enumerate()
                .map(move |(j, sl)| (img, j * rows, sl))
        })
        .collect();
    debug_assert_eq!(tasks.len(), x.n * chunks_per_image);
    tasks.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(buf, tmp): &mut (Vec<f32>, Vec<f32>), (img, r0, dst)| {
            let m = dst.len() / oc;
            let lhs: &[f32] = if pointwise {
                let base = (img * per_image + r0) * s.cin;
                &x.data[base..base + m * s.cin]
            } else {
                buf.resize(m * k, 0.0);
                im2col(x, &s, img, r0, m, wo, buf);
                &buf[..]
            };
            let lhs = MatRef::from_row_major_slice(lhs, m, k);
            // A contiguous product, then bias + ReLU into the strided block output. (Writing
            // the GEMM straight into the strided slice hit an out-of-bounds store in faer
            // 0.24's AVX-512 kernel.)
            tmp.resize(m * s.cout, 0.0);
            let mut d = MatMut::from_row_major_slice_mut(&mut tmp[..], m, s.cout);
            faer::linalg::matmul::matmul(&mut d, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq);
            pulp::Arch::new().dispatch(BiasRelu {
                src: &tmp[..],
                dst,
                b: &l.b,
                stride: oc,
                c_off,
            });
        },
    );
}

/// `dst[r·stride + c_off ..][..cout] = max(src[r] + b, 0)` for each row `r` of `src`
/// (`[m, cout]`): the bias and ReLU written into a block's concatenation. Run through
/// `pulp::Arch::dispatch`, which compiles it for the widest vector instructions the CPU offers
/// (detected at run time; the crate itself targets the SSE2 baseline).
struct BiasRelu<'a> {
    src: &'a [f32],
    dst: &'a mut [f32],
    b: &'a [f32],
    stride: usize,
    c_off: usize,
}

impl pulp::WithSimd for BiasRelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let cout = self.b.len();
        for (src, row) in self
            .src
            .chunks_exact(cout)
            .zip(self.dst.chunks_mut(self.stride))
        {
            let row = &mut row[self.c_off..self.c_off + cout];
            for ((v, t), b) in row.iter_mut().zip(src).zip(self.b) {
                *v = (t + b).max(0.0);
            }
        }
    }
}

/// Patches of rows `r0..r0+m` of image `img`: `[(ky, kx, ci)]` per output pixel.
fn im2col(x: &Act, s: &ConvSpec, img: usize, r0: usize, m: usize, wo: usize, buf: &mut [f32]) {
    let cin = s.cin;
    let k = s.kh * s.kw * cin;
    let plane = &x.data[img * x.h * x.w * cin..(img + 1) * x.h * x.w * cin];
    for r in 0..m {
        let (oy, ox) = ((r0 + r) / wo, (r0 + r) % wo);
        let row = &mut buf[r * k..(r + 1) * k];
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.ph as isize;
            for kx in 0..s.kw {
                let ix = (ox * s.stride + kx) as isize - s.pw as isize;
                let dst = &mut row[(ky * s.kw + kx) * cin..(ky * s.kw + kx + 1) * cin];
                if iy < 0 || ix < 0 || iy as usize >= x.h || ix as usize >= x.w {
                    dst.fill(0.0);
                } else {
                    let at = (iy as usize * x.w + ix as usize) * cin;
                    dst.copy_from_slice(&plane[at..at + cin]);
                }
            }
        }
    }
}

fn max_pool_3x3_s2_into(x: &Act, out: &mut Act, c_off: usize) {
    let (c, oc, wo) = (x.c, out.c, out.w);
    let ho = out.h;
    out.data
        .par_chunks_mut(wo * oc)
        .enumerate()
        .for_each(|(row, dst)| {
            let (img, oy) = (row / ho, row % ho);
            let plane = &x.data[img * x.h * x.w * c..(img + 1) * x.h * x.w * c];
            for ox in 0..wo {
                let d = &mut dst[ox * oc + c_off..ox * oc + c_off + c];
                d.fill(f32::NEG_INFINITY);
                for ky in 0..3 {
                    for kx in 0..3 {
                        let at = ((oy * 2 + ky) * x.w + ox * 2 + kx) * c;
                        for (v, s) in d.iter_mut().zip(&plane[at..at + c]) {
                            *v = v.max(*s);
                        }
                    }
                }
            }
        });
}

/// 3×3 stride 1 padding 1: average over the real pixels only, or max.
fn pool_3x3_s1_into(x: &Act, kind: PoolBranch, out: &mut Act) {
    let (c, h, w) = (x.c, x.h, x.w);
    out.data
        .par_chunks_mut(w * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (img, oy) = (row / h, row % h);
            let plane = &x.data[img * h * w * c..(img + 1) * h * w * c];
            let (y0, y1) = (oy.saturating_sub(1), (oy + 2).min(h));
            for ox in 0..w {
                let (x0, x1) = (ox.saturating_sub(1), (ox + 2).min(w));
                let d = &mut dst[ox * c..(ox + 1) * c];
                match kind {
                    PoolBranch::Max => {
                        d.fill(f32::NEG_INFINITY);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = (iy * w + ix) * c;
                                for (v, s) in d.iter_mut().zip(&plane[at..at + c]) {
                                    *v = v.max(*s);
                                }
                            }
                        }
                    }
                    PoolBranch::AvgExcludePad => {
                        d.fill(0.0);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = (iy * w + ix) * c;
                                for (v, s) in d.iter_mut().zip(&plane[at..at + c]) {
                                    *v += *s;
                                }
                            }
                        }
                        let inv = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
                        for v in d.iter_mut() {
                            *v *= inv;
                        }
                    }
                }
            }
        });
}

fn global_avg_pool(x: &Act) -> Vec<f32> {
    let (hw, c) = (x.h * x.w, x.c);
    let mut out = vec![0f32; x.n * c];
    for (img, o) in out.chunks_mut(c).enumerate() {
        let plane = &x.data[img * hw * c..(img + 1) * hw * c];
        let mut acc = vec![0f64; c];
        for px in plane.chunks(c) {
            for (a, v) in acc.iter_mut().zip(px) {
                *a += *v as f64;
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = (a / hw as f64) as f32;
        }
    }
    out
}
