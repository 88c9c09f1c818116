//! Image transforms applied on the way into a model: resize the shorter side, then centre-crop,
//! as diffusers' training scripts and the Hugging Face `imagefolder` recipes do.

use image::RgbImage;
use image::imageops::{self, FilterType};

/// Resize so the shorter side is `size` (bicubic, Catmull-Rom), then take the centre
/// `size × size` square. An image already at `size × size` is returned unchanged.
pub fn resize_center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img.clone();
    }
    let short = w.min(h).max(1);
    let nw = ((w as u64 * size as u64 + short as u64 / 2) / short as u64).max(size as u64) as u32;
    let nh = ((h as u64 * size as u64 + short as u64 / 2) / short as u64).max(size as u64) as u32;
    let resized = imageops::resize(img, nw, nh, FilterType::CatmullRom);
    let x = (nw - size) / 2;
    let y = (nh - size) / 2;
    imageops::crop_imm(&resized, x, y, size, size).to_image()
}

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

    #[test]
    fn chw_round_trip() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 50) as u8, (y * 80) as u8, 7]));
        let v = to_chw_signed(&img);
        assert_eq!(v.len(), 45);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(from_chw_signed(&v, 5, 3).as_raw(), img.as_raw());
    }
}
