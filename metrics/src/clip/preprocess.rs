//! The image processors of the CLIP-based anchors, each reproduced exactly.
//!
//! | processor | resize | crop / pad | normalise |
//! |---|---|---|---|
//! | [`Processor::Clip`] with [`Resample::Torchvision`] | short side → 224 (long side floored), `torchvision` uint8 bicubic with antialias (int16 fixed-point weights) | centre crop, offsets `int((h−224)/2)` | `(x − 255·mean)/(255·std)` |
//! | [`Processor::Clip`] with [`Resample::Pil`] | the same sizes, `PIL.Image.resize(BICUBIC)` on uint8 (22-bit fixed point) | the same | `x/255`, then `(x − mean)/std` |
//! | [`Processor::Hps`] | `ToTensor`, longest side → 224 (`round` half to even) on the float tensor, bicubic with antialias (or the a = −0.75 kernel without) | zero-pad to a square (left/top `p//2`) | then `(x − mean)/std` |
//!
//! `CLIPImageProcessor` in transformers 5 uses the torchvision backend (CLIP score, PickScore
//! through transformers); transformers 4's "slow" processor, OpenAI's `clip.load` transform and
//! the aesthetic predictor resize with PIL. The two differ by at most one uint8 level.
//! HPSv2's validation transform resizes the `ToTensor` output; with `antialias` the torchvision
//! ≥ 0.17 default, without it the tensor default of the torchvision HPSv2 was released with.

use image::RgbImage;

use crate::preprocess::{BICUBIC, coeffs};

/// OpenAI CLIP's normalisation mean (RGB).
pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation standard deviation (RGB), as the processors' configs write it.
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The uint8 bicubic resampler of a CLIP processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resample {
    /// torchvision's uint8 antialiased bicubic (transformers ≥ 5 "fast" processor).
    Torchvision,
    /// Pillow's `BICUBIC` on 8-bit images (transformers 4 slow processor, `clip.load`).
    Pil,
}

/// An anchor's image processor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Processor {
    /// `CLIPImageProcessor`: short side to `size`, centre crop `crop`, mean/std.
    Clip {
        /// `size.shortest_edge`.
        size: usize,
        /// `crop_size` (square).
        crop: usize,
        /// Normalisation mean.
        mean: [f32; 3],
        /// Normalisation std.
        std: [f32; 3],
        /// Which uint8 bicubic.
        resample: Resample,
        /// Crop offsets `round((h − crop)/2)` (half to even) as torchvision's `CenterCrop`
        /// in OpenAI's `clip.load` transform, instead of transformers' `int((h − crop)/2)`.
        #[serde(default)]
        round_crop: bool,
    },
    /// HPSv2's validation transform (`ResizeMaxSize` on the tensor, zero pad, mean/std).
    Hps {
        /// The square side (224).
        size: usize,
        /// Antialiased bicubic (torchvision ≥ 0.17 default) or the plain a = −0.75 kernel.
        antialias: bool,
        /// Normalisation mean.
        mean: [f32; 3],
        /// Normalisation std.
        std: [f32; 3],
    },
}

impl Processor {
    /// transformers' `CLIPImageProcessor` at 224 with the given resampler.
    pub fn openai(resample: Resample) -> Self {
        Processor::Clip {
            size: 224,
            crop: 224,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            resample,
            round_crop: false,
        }
    }

    /// OpenAI's `clip.load` transform (the aesthetic predictor's): PIL bicubic, torchvision
    /// `CenterCrop` (rounded offsets), `ToTensor`, mean/std.
    pub fn clip_load() -> Self {
        Processor::Clip {
            size: 224,
            crop: 224,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            resample: Resample::Pil,
            round_crop: true,
        }
    }

    /// HPSv2's transform at 224.
    pub fn hps(antialias: bool) -> Self {
        Processor::Hps {
            size: 224,
            antialias,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
        }
    }

    /// The side of the square the processor produces.
    pub fn side(&self) -> usize {
        match self {
            Processor::Clip { crop, .. } => *crop,
            Processor::Hps { size, .. } => *size,
        }
    }

    /// A one-line description for reports and manifests.
    pub fn describe(&self) -> String {
        match self {
            Processor::Clip {
                size,
                crop,
                resample,
                round_crop,
                ..
            } => format!(
                "{}: short side {size} ({} uint8 bicubic, antialiased), centre crop {crop}{}, OpenAI mean/std",
                if *round_crop {
                    "clip.load transform"
                } else {
                    "CLIPImageProcessor"
                },
                match resample {
                    Resample::Torchvision => "torchvision",
                    Resample::Pil => "PIL",
                },
                if *round_crop {
                    " (rounded offsets)"
                } else {
                    ""
                }
            ),
            Processor::Hps {
                size, antialias, ..
            } => format!(
                "HPSv2: ToTensor, long side {size} on the float tensor (bicubic, antialias={antialias}), zero pad, OpenAI mean/std"
            ),
        }
    }

    /// Process one image into a CHW float tensor (`3·side·side` values).
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        match self {
            Processor::Clip {
                size,
                crop,
                mean,
                std,
                resample,
                round_crop,
            } => clip(img, *size, *crop, mean, std, *resample, *round_crop),
            Processor::Hps {
                size,
                antialias,
                mean,
                std,
            } => hps(img, *size, *antialias, mean, std),
        }
    }
}

/// The most elongated image the CLIP processors resize whole (long side / short side); a
/// longer strip is cut to its centre part first.
pub const MAX_ASPECT: usize = 16;

/// `get_resize_output_image_size(shortest_edge)`: the short side becomes `size`, the long
/// side `int(size·long/short)`. Returns (height, width).
pub fn short_side_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if w <= h {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

fn clip(
    img: &RgbImage,
    size: usize,
    crop: usize,
    mean: &[f32; 3],
    std: &[f32; 3],
    resample: Resample,
    round_crop: bool,
) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (short, long) = (w.min(h).max(1), w.max(h));
    if long > short * MAX_ASPECT {
        // The short-side resize of a strip this long would be huge (a 1 × 300 000 image would
        // become 224 × 67 200 000), and the crop reads only its middle: keep the centre
        // `short × MAX_ASPECT·short` part first. Images up to this aspect ratio are processed
        // exactly as transformers and open_clip do.
        let keep = (short * MAX_ASPECT) as u32;
        let part = if w > h {
            image::imageops::crop_imm(img, (w as u32 - keep) / 2, 0, keep, h as u32).to_image()
        } else {
            image::imageops::crop_imm(img, 0, (h as u32 - keep) / 2, w as u32, keep).to_image()
        };
        return clip(&part, size, crop, mean, std, resample, round_crop);
    }
    let (oh, ow) = short_side_size(h, w, size);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * crop * crop];
    // transformers' center_crop: top = int((h − crop)/2); a side shorter than the crop is
    // padded with zeros around the image (never the case after the resize above).
    let offset = |full: usize| -> i64 {
        let d = full as i64 - crop as i64;
        if round_crop {
            (d as f64 / 2.0).round_ties_even() as i64
        } else {
            d / 2
        }
    };
    let (top, left) = (offset(oh), offset(ow));
    for ch in 0..3 {
        let plane: Vec<u8> = (0..w * h).map(|i| raw[i * 3 + ch]).collect();
        let r = resize_u8(&plane, w, h, ow, oh, resample);
        let o = &mut out[ch * crop * crop..(ch + 1) * crop * crop];
        for y in 0..crop {
            for x in 0..crop {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                let v = if sy >= 0 && sx >= 0 && (sy as usize) < oh && (sx as usize) < ow {
                    r[sy as usize * ow + sx as usize] as f32
                } else {
                    0.0
                };
                o[y * crop + x] = match resample {
                    // The fast processor fuses the rescale into the normalisation.
                    Resample::Torchvision => (v - 255.0 * mean[ch]) / (255.0 * std[ch]),
                    // clip.load: ToTensor divides by 255.
                    Resample::Pil if round_crop => (v / 255.0 - mean[ch]) / std[ch],
                    // The slow processor rescales (in float32), then normalises.
                    Resample::Pil => (v * (1.0f32 / 255.0) - mean[ch]) / std[ch],
                };
            }
        }
    }
    out
}

/// Fixed-point weights of one axis: per output index the first input index and the integer
/// weights, with the precision (bits) they were scaled by.
struct IntCoeffs {
    taps: Vec<(usize, Vec<i32>)>,
    bits: u32,
}

fn int_coeffs(in_size: usize, out_size: usize, resample: Resample) -> IntCoeffs {
    let c = coeffs(in_size, out_size, &BICUBIC);
    let bits = match resample {
        // Pillow: PRECISION_BITS = 32 − 8 − 2.
        Resample::Pil => 22,
        // ATen `_compute_index_ranges_int16_weights`: the most bits such that the largest
        // weight still fits in an int16.
        Resample::Torchvision => {
            let max_w = c
                .iter()
                .flat_map(|(_, k)| k.iter().copied())
                .fold(0.0f64, f64::max);
            let mut p = 0u32;
            while p < 22 {
                let next = (0.5 + max_w * (1u64 << (p + 1)) as f64) as i64;
                if next >= 1 << 15 {
                    break;
                }
                p += 1;
            }
            p
        }
    };
    let scale = (1u64 << bits) as f64;
    let taps = c
        .into_iter()
        .map(|(x0, k)| {
            let k = k
                .into_iter()
                .map(|v| {
                    let s = v * scale;
                    // C's (int) truncation after ±0.5: round half away from zero.
                    if s < 0.0 {
                        (-0.5 + s) as i32
                    } else {
                        (0.5 + s) as i32
                    }
                })
                .collect();
            (x0, k)
        })
        .collect();
    IntCoeffs { taps, bits }
}

fn clip8(ss: i64, bits: u32) -> u8 {
    (ss >> bits).clamp(0, 255) as u8
}

/// Separable uint8 bicubic resize of one plane: horizontal pass (when the width changes) into
/// an 8-bit image, then the vertical pass, each output `clip8((2^(b−1) + Σ w·x) >> b)`.
pub fn resize_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
    resample: Resample,
) -> Vec<u8> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let kx = int_coeffs(w, ow, resample);
        let init = 1i64 << (kx.bits - 1);
        let mut tmp = vec![0u8; ow * h];
        for y in 0..h {
            let row = &cur[y * w..(y + 1) * w];
            for (xx, (x0, k)) in kx.taps.iter().enumerate() {
                let mut ss = init;
                for (i, &kv) in k.iter().enumerate() {
                    ss += row[x0 + i] as i64 * kv as i64;
                }
                tmp[y * ow + xx] = clip8(ss, kx.bits);
            }
        }
        cur = tmp;
        cw = ow;
    }
    if oh != h {
        let ky = int_coeffs(h, oh, resample);
        let init = 1i64 << (ky.bits - 1);
        let mut tmp = vec![0u8; cw * oh];
        for (yy, (y0, k)) in ky.taps.iter().enumerate() {
            for x in 0..cw {
                let mut ss = init;
                for (i, &kv) in k.iter().enumerate() {
                    ss += cur[(y0 + i) * cw + x] as i64 * kv as i64;
                }
                tmp[yy * cw + x] = clip8(ss, ky.bits);
            }
        }
        cur = tmp;
    }
    cur
}

/// HPSv2's `ResizeMaxSize` output size (height, width): `round(dim·size/max(h, w))`, Python's
/// round (half to even); `None` when the scale is exactly 1 (nothing resized or padded).
pub fn max_side_size(h: usize, w: usize, size: usize) -> Option<(usize, usize)> {
    let scale = size as f64 / h.max(w) as f64;
    if scale == 1.0 {
        return None;
    }
    Some((
        (h as f64 * scale).round_ties_even() as usize,
        (w as f64 * scale).round_ties_even() as usize,
    ))
}

fn hps(img: &RgbImage, size: usize, antialias: bool, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let (oh, ow) = max_side_size(h, w, size).unwrap_or((h, w));
    // The padded canvas; a longest side already equal to `size` is left as it is (then the
    // image is only square if it was: HPSv2 does not crop).
    let (ch_h, ch_w) = if (oh, ow) == (h, w) {
        (h, w)
    } else {
        (size, size)
    };
    let (top, left) = ((ch_h - oh) / 2, (ch_w - ow) / 2);
    let mut out = vec![0f32; 3 * ch_h * ch_w];
    for ch in 0..3 {
        let plane: Vec<f32> = (0..w * h).map(|i| raw[i * 3 + ch] as f32 / 255.0).collect();
        let r = if (oh, ow) == (h, w) {
            plane
        } else if antialias {
            torch_bicubic_aa(&plane, w, h, ow, oh)
        } else {
            torch_bicubic(&plane, w, h, ow, oh)
        };
        let o = &mut out[ch * ch_h * ch_w..(ch + 1) * ch_h * ch_w];
        for v in o.iter_mut() {
            *v = (0.0 - mean[ch]) / std[ch];
        }
        for y in 0..oh {
            for x in 0..ow {
                o[(y + top) * ch_w + x + left] = (r[y * ow + x] - mean[ch]) / std[ch];
            }
        }
    }
    out
}

/// torchvision `resize(bicubic, antialias=True)` of a float plane: the separable
/// antialiased kernel (a = −0.5, support widened by the downscale factor), width first, no
/// clamping.
pub fn torch_bicubic_aa(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let kx = coeffs(w, ow, &BICUBIC);
        let mut tmp = vec![0f32; ow * h];
        for y in 0..h {
            let row = &cur[y * w..(y + 1) * w];
            for (xx, (x0, k)) in kx.iter().enumerate() {
                let ss: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(i, kv)| row[x0 + i] as f64 * kv)
                    .sum();
                tmp[y * ow + xx] = ss as f32;
            }
        }
        cur = tmp;
        cw = ow;
    }
    if oh != h {
        let ky = coeffs(h, oh, &BICUBIC);
        let mut tmp = vec![0f32; cw * oh];
        for (yy, (y0, k)) in ky.iter().enumerate() {
            for x in 0..cw {
                let ss: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(i, kv)| cur[(y0 + i) * cw + x] as f64 * kv)
                    .sum();
                tmp[yy * cw + x] = ss as f32;
            }
        }
        cur = tmp;
    }
    cur
}

/// PyTorch `interpolate(mode="bicubic", align_corners=False)` without antialias: the
/// a = −0.75 kernel on four clamped neighbours, source `(d + 0.5)·in/out − 0.5`.
pub fn torch_bicubic(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let taps = |in_size: usize, out_size: usize| -> Vec<([usize; 4], [f32; 4])> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|d| {
                let real = scale * (d as f32 + 0.5) - 0.5;
                let i0 = real.floor();
                let t = real - i0;
                let idx = |o: i64| (i0 as i64 + o).clamp(0, in_size as i64 - 1) as usize;
                (
                    [idx(-1), idx(0), idx(1), idx(2)],
                    [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)],
                )
            })
            .collect()
    };
    let xs = taps(w, ow);
    let ys = taps(h, oh);
    let mut out = vec![0f32; ow * oh];
    for (oy, (yi, yw)) in ys.iter().enumerate() {
        for (ox, (xi, xw)) in xs.iter().enumerate() {
            let mut acc = 0f32;
            for r in 0..4 {
                let row = &src[yi[r] * w..];
                let v = xw[0] * row[xi[0]]
                    + xw[1] * row[xi[1]]
                    + xw[2] * row[xi[2]]
                    + xw[3] * row[xi[3]];
                acc += yw[r] * v;
            }
            out[oy * ow + ox] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_processors() {
        // transformers floors the long side; HPSv2 rounds half to even.
        assert_eq!(short_side_size(400, 600, 224), (224, 336));
        assert_eq!(short_side_size(300, 451, 224), (224, 336));
        assert_eq!(short_side_size(300, 190, 224), (353, 224));
        assert_eq!(max_side_size(512, 512, 224), Some((224, 224)));
        assert_eq!(max_side_size(224, 100, 224), None);
        // 150·224/190 = 176.84… → 177; 2.5 → 2 (half to even).
        assert_eq!(max_side_size(150, 190, 224), Some((177, 224)));
        assert_eq!(max_side_size(5, 448, 224), Some((2, 224)));
    }

    /// A 1 × 300 000 strip is processed through its centre part (a crop-sized output, no
    /// 15 GB intermediate), giving what that part alone gives.
    #[test]
    fn an_extreme_strip_is_cut_before_the_short_side_resize() {
        let strip = RgbImage::from_fn(1, 300_000, |_, y| image::Rgb([(y % 253) as u8, 40, 90]));
        let p = Processor::openai(Resample::Pil);
        let out = p.apply(&strip);
        assert_eq!(out.len(), 3 * 224 * 224);
        let part = image::imageops::crop_imm(&strip, 0, 150_000 - 8, 1, 16).to_image();
        assert_eq!(out, p.apply(&part));
    }

    #[test]
    fn clip_load_rounds_the_crop_offset_half_to_even() {
        // A 224×355 image: (355 − 224)/2 = 65.5 → torchvision's CenterCrop 66, transformers 65.
        let img = RgbImage::from_fn(224, 355, |_, y| image::Rgb([y as u8, 0, 0]));
        let row0 = |p: &Processor| {
            let v = p.apply(&img)[0];
            ((v * OPENAI_STD[0] + OPENAI_MEAN[0]) * 255.0).round() as i64
        };
        assert_eq!(row0(&Processor::clip_load()), 66);
        assert_eq!(row0(&Processor::openai(Resample::Pil)), 65);
        // 64.5 → 64 in both.
        let img = RgbImage::from_fn(224, 353, |_, y| image::Rgb([y as u8, 0, 0]));
        let v = Processor::clip_load().apply(&img)[0];
        assert_eq!(
            ((v * OPENAI_STD[0] + OPENAI_MEAN[0]) * 255.0).round() as i64,
            64
        );
    }

    #[test]
    fn constant_planes_stay_constant_in_every_resampler() {
        let src = vec![77u8; 33 * 47];
        for r in [Resample::Pil, Resample::Torchvision] {
            for (ow, oh) in [(224, 160), (20, 11)] {
                assert!(resize_u8(&src, 47, 33, ow, oh, r).iter().all(|&v| v == 77));
            }
        }
        let f = vec![0.25f32; 33 * 47];
        assert!(
            torch_bicubic_aa(&f, 47, 33, 224, 20)
                .iter()
                .all(|v| (v - 0.25).abs() < 1e-6)
        );
        assert!(
            torch_bicubic(&f, 47, 33, 224, 20)
                .iter()
                .all(|v| (v - 0.25).abs() < 1e-6)
        );
    }

    #[test]
    fn int16_precision_keeps_the_largest_weight_in_range() {
        for (i, o) in [(512, 224), (190, 224), (600, 336)] {
            let c = int_coeffs(i, o, Resample::Torchvision);
            assert!(c.bits > 10 && c.bits <= 22, "{}", c.bits);
            let max = c.taps.iter().flat_map(|(_, k)| k.iter()).max().unwrap();
            assert!(*max < 1 << 15);
        }
    }
}
