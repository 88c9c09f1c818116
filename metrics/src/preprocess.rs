//! The input pipelines of the FID reference implementations, named as modes. Each takes an
//! 8-bit RGB image of any size and produces the 299×299×3 (NHWC) input of the network.
//!
//! | mode          | resize to 299×299                                   | normalisation |
//! |---------------|-----------------------------------------------------|---------------|
//! | `clean`       | per channel PIL bicubic (a = −0.5, antialiased) on a float32 `'F'` image, no re-quantisation, clip to [0, 255] | (x − 128)/128 |
//! | `pytorch-fid` | PyTorch bilinear, `align_corners=False`, no antialias, on x/255 | 2x − 1 |
//! | `tf-legacy`   | TF1 `ResizeBilinear` (src = dst·in/out, no half-pixel offset) on [0, 255] | (x − 128)/128 |

use image::RgbImage;

use crate::arch::INPUT;

/// A named FID input pipeline; recorded with every result.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// clean-fid's default.
    #[default]
    Clean,
    /// pytorch-fid (= clean-fid `legacy_pytorch`).
    PytorchFid,
    /// TTUR / torch-fidelity / clean-fid `legacy_tensorflow`.
    TfLegacy,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Clean => "clean",
            Mode::PytorchFid => "pytorch-fid",
            Mode::TfLegacy => "tf-legacy",
        }
    }

    /// Parse a mode name (`clean`, `pytorch-fid`, `tf-legacy`; `_` accepted for `-`).
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "clean" => Some(Mode::Clean),
            "pytorch-fid" | "legacy-pytorch" => Some(Mode::PytorchFid),
            "tf-legacy" | "legacy-tensorflow" => Some(Mode::TfLegacy),
            _ => None,
        }
    }

    /// A one-line description of the pipeline (for reports).
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Clean => {
                "clean-fid clean: PIL bicubic per channel in float32, clip [0,255], (x-128)/128"
            }
            Mode::PytorchFid => {
                "pytorch-fid: x/255, bilinear align_corners=False without antialias, 2x-1"
            }
            Mode::TfLegacy => "TF1 legacy: ResizeBilinear (no half-pixel offset), (x-128)/128",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Preprocess one image into `out` (299·299·3 values, NHWC).
pub fn preprocess_into(img: &RgbImage, mode: Mode, out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert_eq!(out.len(), INPUT * INPUT * 3);
    let raw = img.as_raw();
    for ch in 0..3 {
        let plane: Vec<f32> = (0..w * h).map(|i| raw[i * 3 + ch] as f32).collect();
        let resized = match mode {
            Mode::Clean => {
                let mut r = pil_resize_f32(&plane, w, h, INPUT, INPUT, &BICUBIC);
                for v in &mut r {
                    *v = v.clamp(0.0, 255.0);
                }
                r
            }
            Mode::PytorchFid => {
                let scaled: Vec<f32> = plane.iter().map(|v| v / 255.0).collect();
                torch_bilinear(&scaled, w, h, INPUT, INPUT)
            }
            Mode::TfLegacy => tf1_bilinear(&plane, w, h, INPUT, INPUT),
        };
        for (i, v) in resized.iter().enumerate() {
            out[i * 3 + ch] = match mode {
                Mode::Clean | Mode::TfLegacy => (v - 128.0) / 128.0,
                Mode::PytorchFid => 2.0 * v - 1.0,
            };
        }
    }
}

/// Preprocess one image.
pub fn preprocess(img: &RgbImage, mode: Mode) -> Vec<f32> {
    let mut out = vec![0f32; INPUT * INPUT * 3];
    preprocess_into(img, mode, &mut out);
    out
}

/// A Pillow resampling filter.
pub struct Filter {
    f: fn(f64) -> f64,
    support: f64,
}

/// Pillow's bicubic (a = −0.5, support 2).
pub const BICUBIC: Filter = Filter {
    f: bicubic,
    support: 2.0,
};

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` for a full-image box: per output index the first input index
/// and the normalised weights (double precision).
pub(crate) fn coeffs(in_size: usize, out_size: usize, filter: &Filter) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| (filter.f)((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                for v in &mut k {
                    *v /= ww;
                }
            }
            (xmin, k)
        })
        .collect()
}

/// Pillow's resize of a mode `'F'` image: horizontal pass (if the width changes) into a
/// float32 image, then vertical pass; each output is a double accumulation stored as f32.
pub fn pil_resize_f32(
    src: &[f32],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
    filter: &Filter,
) -> Vec<f32> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let kx = coeffs(w, ow, filter);
        let mut tmp = vec![0f32; ow * h];
        for y in 0..h {
            let row = &cur[y * w..(y + 1) * w];
            for (xx, (x0, k)) in kx.iter().enumerate() {
                let mut ss = 0.0f64;
                for (i, kv) in k.iter().enumerate() {
                    ss += row[x0 + i] as f64 * kv;
                }
                tmp[y * ow + xx] = ss as f32;
            }
        }
        cur = tmp;
        cw = ow;
    }
    if oh != h {
        let ky = coeffs(h, oh, filter);
        let mut tmp = vec![0f32; cw * oh];
        for (yy, (y0, k)) in ky.iter().enumerate() {
            for x in 0..cw {
                let mut ss = 0.0f64;
                for (i, kv) in k.iter().enumerate() {
                    ss += cur[(y0 + i) * cw + x] as f64 * kv;
                }
                tmp[yy * cw + x] = ss as f32;
            }
        }
        cur = tmp;
    }
    cur
}

/// PyTorch `F.interpolate(mode="bilinear", align_corners=False)` without antialias, f32.
pub fn torch_bilinear(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let idx = |in_size: usize, out_size: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|d| {
                let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = src as usize;
                let off = usize::from(i0 < in_size - 1);
                let l1 = src - i0 as f32;
                (i0, i0 + off, 1.0 - l1, l1)
            })
            .collect()
    };
    let xs = idx(w, ow);
    let ys = idx(h, oh);
    let mut out = vec![0f32; ow * oh];
    for (oy, &(y0, y1, hl0, hl1)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, wl0, wl1)) in xs.iter().enumerate() {
            out[oy * ow + ox] = hl0 * (wl0 * src[y0 * w + x0] + wl1 * src[y0 * w + x1])
                + hl1 * (wl0 * src[y1 * w + x0] + wl1 * src[y1 * w + x1]);
        }
    }
    out
}

/// TF1 `ResizeBilinear` (`align_corners=False`, no half-pixel centres): src = dst·in/out,
/// lerp along x on the two rows, then along y (torch-fidelity's `resample_manually`).
pub fn tf1_bilinear(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let idx = |in_size: usize, out_size: usize| -> Vec<(usize, usize, f32)> {
        // torch-fidelity: the scale in double, rounded to float32, times a float32 index.
        let scale = (in_size as f64 / out_size as f64) as f32;
        (0..out_size)
            .map(|d| {
                let s = d as f32 * scale;
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(in_size - 1);
                (i0.min(in_size - 1), i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = idx(w, ow);
    let ys = idx(h, oh);
    let mut out = vec![0f32; ow * oh];
    for (oy, &(y0, y1, wy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, wx)) in xs.iter().enumerate() {
            let (a, b) = (src[y0 * w + x0], src[y0 * w + x1]);
            let (c, d) = (src[y1 * w + x0], src[y1 * w + x1]);
            let top = a + (b - a) * wx;
            let bottom = c + (d - c) * wx;
            out[oy * ow + ox] = top + (bottom - top) * wy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_in_every_mode() {
        let img = RgbImage::from_fn(299, 299, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        for mode in [Mode::Clean, Mode::PytorchFid, Mode::TfLegacy] {
            let out = preprocess(&img, mode);
            for (i, p) in img.pixels().enumerate() {
                for ch in 0..3 {
                    let v = p.0[ch] as f32;
                    let want = match mode {
                        Mode::PytorchFid => 2.0 * (v / 255.0) - 1.0,
                        _ => (v - 128.0) / 128.0,
                    };
                    assert!((out[i * 3 + ch] - want).abs() < 1e-6, "{mode} {i}");
                }
            }
        }
    }

    #[test]
    fn bicubic_coefficients_sum_to_one_and_antialias_when_shrinking() {
        for (i, o) in [(47, 299), (512, 299), (301, 299)] {
            let c = coeffs(i, o, &BICUBIC);
            for (_, k) in &c {
                assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
            let taps = c.iter().map(|(_, k)| k.len()).max().unwrap();
            if i > o {
                assert!(taps > 4, "downscaling widens the support: {taps}");
            } else {
                assert!(taps <= 5);
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let src = vec![77.0f32; 33 * 47];
        for out in [
            pil_resize_f32(&src, 47, 33, 299, 299, &BICUBIC),
            tf1_bilinear(&src, 47, 33, 299, 299),
            torch_bilinear(&src, 47, 33, 299, 299),
        ] {
            assert!(out.iter().all(|v| (v - 77.0).abs() < 1e-4));
        }
    }
}
