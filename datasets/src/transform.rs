//! Image transforms applied on the way into a model: resize the shorter side, then centre-crop,
//! as diffusers' training scripts and the Hugging Face `imagefolder` recipes do.

use image::RgbImage;
use image::imageops::{self, FilterType};

/// Resize so the shorter side is `size` (bicubic, Catmull-Rom), then take the centre
/// `size × size` square. An image already at `size × size` is returned unchanged.
///
/// The resized image is never larger than [`MAX_RESIZED_SIDES`] times the output's side on its
/// long edge: a more elongated image (a 1 × 300 000 strip) is first cut to the centre part the
/// crop keeps, so a tiny file cannot ask for a huge intermediate image.
pub fn resize_center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img.clone();
    }
    let short = w.min(h).max(1) as u64;
    let long = w.max(h) as u64;
    if long > short * MAX_RESIZED_SIDES {
        // Keep the centre `short × (MAX_RESIZED_SIDES · short)` part of the long side: the
        // crop below only reads its middle `short` pixels.
        let keep = (short * MAX_RESIZED_SIDES) as u32;
        let part = if w > h {
            imageops::crop_imm(img, (w - keep) / 2, 0, keep, h).to_image()
        } else {
            imageops::crop_imm(img, 0, (h - keep) / 2, w, keep).to_image()
        };
        return resize_center_crop(&part, size);
    }
    let scale = |v: u32| ((v as u64 * size as u64 + short / 2) / short).max(size as u64) as u32;
    let (nw, nh) = (scale(w), scale(h));
    let resized = imageops::resize(img, nw, nh, FilterType::CatmullRom);
    let x = (nw - size) / 2;
    let y = (nh - size) / 2;
    imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// How many output sides the resized image's long edge may span (see [`resize_center_crop`]).
pub const MAX_RESIZED_SIDES: u64 = 4;

/// Convert to a CHW `f32` buffer in `[-1, 1]` (the convention of diffusion models' pixel space).
pub fn to_chw_signed(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = p.0[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// One value in `[-1, 1]` as the 8-bit channel an image file stores (clamped, rounded).
pub fn signed_to_u8(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Convert a CHW `f32` buffer in `[-1, 1]` back to an sRGB image (values are clamped).
pub fn from_chw_signed(data: &[f32], width: u32, height: u32) -> RgbImage {
    let n = (width * height) as usize;
    assert_eq!(data.len(), 3 * n, "buffer is not 3×{height}×{width}");
    RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        image::Rgb([0, 1, 2].map(|c| signed_to_u8(data[c * n + i])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_takes_the_centre_of_a_wide_image() {
        // Left third red, middle third green, right third blue: the centre crop is green.
        let img = RgbImage::from_fn(96, 32, |x, _| match x / 32 {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let out = resize_center_crop(&img, 16);
        assert_eq!(out.dimensions(), (16, 16));
        assert_eq!(out.get_pixel(8, 8).0, [0, 255, 0]);
        let tall = RgbImage::from_fn(20, 50, |_, y| image::Rgb([(y * 5) as u8, 0, 0]));
        let out = resize_center_crop(&tall, 10);
        assert_eq!(out.dimensions(), (10, 10));
        // Centre row of the crop corresponds to the centre row of the source (~125).
        let v = out.get_pixel(5, 5).0[0] as i32;
        assert!((v - 125).abs() < 15, "{v}");
    }

    /// A 1 × 300 000 strip resizes through its centre part: a small output, quickly, and
    /// the same pixels as the part alone.
    #[test]
    fn an_extreme_strip_is_cut_before_it_is_resized() {
        let strip = RgbImage::from_fn(300_000, 1, |x, _| image::Rgb([(x % 251) as u8, 9, 200]));
        let out = resize_center_crop(&strip, 32);
        assert_eq!(out.dimensions(), (32, 32));
        let mid = imageops::crop_imm(&strip, 150_000 - 2, 0, 4, 1).to_image();
        assert_eq!(out.as_raw(), resize_center_crop(&mid, 32).as_raw());
        // An ordinary aspect ratio is untouched by the cut.
        let wide = RgbImage::from_fn(90, 30, |x, y| image::Rgb([x as u8, y as u8, 3]));
        let direct = {
            let r = imageops::resize(&wide, 96, 32, FilterType::CatmullRom);
            imageops::crop_imm(&r, 32, 0, 32, 32).to_image()
        };
        assert_eq!(resize_center_crop(&wide, 32).as_raw(), direct.as_raw());
    }

    #[test]
    fn chw_round_trip() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 50) as u8, (y * 80) as u8, 7]));
        let v = to_chw_signed(&img);
        assert_eq!(v.len(), 45);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(from_chw_signed(&v, 5, 3).as_raw(), img.as_raw());
    }
}
