//! Checks a generated image against the caption it was generated from, using what the
//! procedural set knows about its own captions: is the background the named colour, is there a
//! region of the named shape colour, and how much pixel noise is left. These are the
//! recognisability controls of the built-in benchmark (cheap, interpretable, no network).

use image::RgbImage;

use crate::shapes::{BACKGROUNDS, COLORS};

/// Labels recovered from a shapes caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptionLabels {
    /// Index into [`COLORS`].
    pub color: usize,
    /// Index into [`BACKGROUNDS`].
    pub background: usize,
}

/// Parse "a large red circle on a navy background" back into labels.
pub fn parse_caption(caption: &str) -> Option<CaptionLabels> {
    let words: Vec<&str> = caption.split_whitespace().collect();
    let on = words.iter().position(|w| *w == "on")?;
    let color = words[..on]
        .iter()
        .find_map(|w| COLORS.iter().position(|c| c.0 == *w))?;
    let background = words[on..]
        .iter()
        .find_map(|w| BACKGROUNDS.iter().position(|c| c.0 == *w))?;
    Some(CaptionLabels { color, background })
}

/// Scores of one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The border pixels' median colour is nearest to the captioned background colour.
    pub background_ok: bool,
    /// At least 1.5% of pixels (a small triangle covers ~2.5%) are nearer the captioned shape colour than to any other palette
    /// colour (background colours included) and within a distance of 60.
    pub color_ok: bool,
    /// Mean absolute difference from a 3×3 box blur, in 0–255 units (residual noise).
    pub noise: f64,
}

fn dist(a: [u8; 3], b: [u8; 3]) -> f64 {
    (0..3)
        .map(|c| (a[c] as f64 - b[c] as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Score an image against its caption (None when the caption is not a shapes caption).
pub fn score(img: &RgbImage, caption: &str) -> Option<Score> {
    let labels = parse_caption(caption)?;
    let (w, h) = img.dimensions();
    // Background: per-channel median of the outermost ring of pixels.
    let mut ring = Vec::new();
    for x in 0..w {
        ring.push(img.get_pixel(x, 0).0);
        ring.push(img.get_pixel(x, h - 1).0);
    }
    for y in 1..h - 1 {
        ring.push(img.get_pixel(0, y).0);
        ring.push(img.get_pixel(w - 1, y).0);
    }
    let median = [0, 1, 2].map(|c| {
        let mut v: Vec<u8> = ring.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        v[v.len() / 2]
    });
    let bg_best = (0..BACKGROUNDS.len())
        .min_by(|&a, &b| dist(median, BACKGROUNDS[a].1).total_cmp(&dist(median, BACKGROUNDS[b].1)))
        .unwrap_or(0);
    // Shape colour coverage.
    let target = COLORS[labels.color].1;
    let palette: Vec<[u8; 3]> = COLORS
        .iter()
        .map(|c| c.1)
        .chain(BACKGROUNDS.iter().map(|c| c.1))
        .collect();
    let mut hits = 0usize;
    for p in img.pixels() {
        let d = dist(p.0, target);
        if d < 60.0 && palette.iter().all(|q| *q == target || dist(p.0, *q) >= d) {
            hits += 1;
        }
    }
    let color_ok = hits as f64 >= 0.015 * (w * h) as f64;
    // Residual noise.
    let mut acc = 0.0;
    let mut n = 0usize;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut s = 0.0;
                for dy in 0..3 {
                    for dx in 0..3 {
                        s += img.get_pixel(x + dx - 1, y + dy - 1).0[c] as f64;
                    }
                }
                acc += (img.get_pixel(x, y).0[c] as f64 - s / 9.0).abs();
                n += 1;
            }
        }
    }
    Some(Score {
        background_ok: bg_best == labels.background,
        color_ok,
        noise: acc / n.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{ShapesConfig, generate};

    #[test]
    fn real_images_score_well_and_noise_scores_badly() {
        let cfg = ShapesConfig::DEFAULT;
        let (mut bg, mut col, mut noise) = (0, 0, 0.0);
        for i in 0..200 {
            let ex = generate(cfg, i);
            let s = score(&ex.image, &ex.caption).unwrap();
            bg += s.background_ok as usize;
            col += s.color_ok as usize;
            noise += s.noise / 200.0;
        }
        assert!(bg >= 190, "background accuracy on real data {bg}/200");
        assert!(col >= 190, "colour accuracy on real data {col}/200");
        assert!(noise < 6.0, "real images are smooth: {noise}");
        // Uniform noise fails both checks and scores high noise.
        let mut state = 12345u32;
        let img = RgbImage::from_fn(32, 32, |_, _| {
            image::Rgb([0, 1, 2].map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 24) as u8
            }))
        });
        let s = score(&img, "a small red circle on a navy background").unwrap();
        assert!(s.noise > 40.0);
        assert!(!s.background_ok || !s.color_ok);
        assert_eq!(
            parse_caption("a large orange triangle on a beige gradient background"),
            Some(CaptionLabels {
                color: 5,
                background: 4
            })
        );
        assert_eq!(parse_caption("a cat"), None);
    }
}
