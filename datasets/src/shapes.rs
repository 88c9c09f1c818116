//! The built-in procedural data set `builtin:shapes`: RGB scenes of one coloured shape on a
//! plain or two-tone background, with a caption and integer labels.
//!
//! Every example is a pure function of `(seed, index)`, so the set is unlimited and
//! reproducible: the same pair gives the same pixels on every machine (the renderer uses only
//! IEEE arithmetic on f64 with no platform-dependent functions in the hot path besides
//! `sin`/`cos`, which are evaluated once per example and rounded before use).

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape names, in label order.
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
/// Foreground colour names with their sRGB values, in label order.
pub const COLORS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 180, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [235, 210, 40]),
    ("purple", [150, 60, 190]),
    ("orange", [240, 140, 30]),
];
/// Background colour names with their sRGB values, in label order.
pub const BACKGROUNDS: [(&str, [u8; 3]); 5] = [
    ("white", [235, 235, 230]),
    ("black", [25, 25, 30]),
    ("gray", [128, 128, 128]),
    ("navy", [20, 30, 90]),
    ("beige", [215, 195, 150]),
];
/// Size names, in label order.
pub const SIZES: [&str; 2] = ["small", "large"];

/// The labels of one example (indices into [`SHAPES`], [`COLORS`], [`BACKGROUNDS`], [`SIZES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShapeLabels {
    /// Index into [`SHAPES`].
    pub shape: u8,
    /// Index into [`COLORS`].
    pub color: u8,
    /// Index into [`BACKGROUNDS`].
    pub background: u8,
    /// Index into [`SIZES`].
    pub size: u8,
    /// Whether the background is a vertical two-tone gradient.
    pub gradient: bool,
}

/// One generated example.
#[derive(Debug, Clone)]
pub struct ShapeExample {
    /// The image, `size × size` sRGB.
    pub image: RgbImage,
    /// The caption, e.g. "a large red circle on a navy background".
    pub caption: String,
    /// The labels the caption was made from.
    pub labels: ShapeLabels,
}

/// Configuration of the procedural set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShapesConfig {
    /// Image side in pixels.
    pub size: u32,
    /// Base seed; example `i` depends only on `(seed, i)`.
    pub seed: u64,
    /// Which drawing of each example: 0 is the set itself; any other value keeps every
    /// example's caption (its labels) and draws its geometry and colour jitter anew — a second
    /// real image of the same caption, for real-vs-real floors.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draw: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ShapesConfig {
    /// The default set used by the embedded benchmark: 32×32, seed 0.
    pub const DEFAULT: ShapesConfig = ShapesConfig {
        size: 32,
        seed: 0,
        draw: 0,
    };
}

/// First index of the evaluation split (disjoint from any training run's indices); written as
/// a source: `builtin:shapes?offset=1000000`.
pub const EVAL_OFFSET: u64 = 1_000_000;

/// Mix a seed and an index into one 64-bit RNG seed (splitmix64 finaliser).
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed
        ^ index
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generate example `index` of the set.
pub fn generate(cfg: ShapesConfig, index: u64) -> ShapeExample {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, index));
    let shape = rng.random_range(0..SHAPES.len()) as u8;
    let color = rng.random_range(0..COLORS.len()) as u8;
    let mut background = rng.random_range(0..BACKGROUNDS.len()) as u8;
    // Never draw a shape on a background of nearly the same colour.
    if (color == 3 && background == 4) || (color == 2 && background == 3) {
        background = (background + 1) % BACKGROUNDS.len() as u8;
    }
    let size = rng.random_range(0..SIZES.len()) as u8;
    let gradient = rng.random_bool(0.3);
    if cfg.draw != 0 {
        // Another drawing of the same labels: the rest from its own stream.
        rng = ChaCha8Rng::seed_from_u64(mix(mix(cfg.seed, index), cfg.draw));
    }
    let labels = ShapeLabels {
        shape,
        color,
        background,
        size,
        gradient,
    };

    let n = cfg.size as f64;
    let radius = if size == 0 {
        rng.random_range(0.14..0.22)
    } else {
        rng.random_range(0.26..0.36)
    } * n;
    let margin = radius * 0.9;
    let cx = rng.random_range(margin..(n - margin));
    let cy = rng.random_range(margin..(n - margin));
    let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let jitter = |rng: &mut ChaCha8Rng, c: [u8; 3], amount: i32| -> [f64; 3] {
        let mut out = [0.0; 3];
        for (o, v) in out.iter_mut().zip(c) {
            *o = (v as i32 + rng.random_range(-amount..=amount)).clamp(0, 255) as f64;
        }
        out
    };
    let fg = jitter(&mut rng, COLORS[color as usize].1, 12);
    let bg_top = jitter(&mut rng, BACKGROUNDS[background as usize].1, 10);
    let bg_bottom = if gradient {
        let base = bg_top;
        let d = rng.random_range(25.0..55.0)
            * if base[0] + base[1] + base[2] > 380.0 {
                -1.0
            } else {
                1.0
            };
        [
            (base[0] + d).clamp(0.0, 255.0),
            (base[1] + d).clamp(0.0, 255.0),
            (base[2] + d).clamp(0.0, 255.0),
        ]
    } else {
        bg_top
    };
    // Round the trigonometric values so that the pixels do not depend on libm's last bit.
    let round = |v: f64| (v * 1e9).round() / 1e9;
    let (sin, cos) = (round(angle.sin()), round(angle.cos()));

    let inside = |px: f64, py: f64| -> bool {
        let (dx, dy) = (px - cx, py - cy);
        // Rotate into the shape's frame.
        let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
        match shape {
            0 => dx * dx + dy * dy <= radius * radius,
            1 => {
                let h = radius * 0.8;
                u.abs() <= h && v.abs() <= h
            }
            _ => {
                // Equilateral triangle with circumradius `radius`.
                let r = radius;
                let half = 0.5 * r;
                let edge = |nx: f64, ny: f64| nx * u + ny * v <= half;
                edge(0.0, 1.0) && edge(0.866_025_403_8, -0.5) && edge(-0.866_025_403_8, -0.5)
            }
        }
    };

    // 4×4 supersampling for anti-aliased edges.
    const SS: u32 = 4;
    let mut img = RgbImage::new(cfg.size, cfg.size);
    for y in 0..cfg.size {
        let t = if cfg.size > 1 {
            y as f64 / (cfg.size - 1) as f64
        } else {
            0.0
        };
        let bg = [0, 1, 2].map(|c| bg_top[c] * (1.0 - t) + bg_bottom[c] * t);
        for x in 0..cfg.size {
            let mut cover = 0u32;
            for sy in 0..SS {
                for sx in 0..SS {
                    let px = x as f64 + (sx as f64 + 0.5) / SS as f64;
                    let py = y as f64 + (sy as f64 + 0.5) / SS as f64;
                    cover += inside(px, py) as u32;
                }
            }
            let a = cover as f64 / (SS * SS) as f64;
            let px =
                [0, 1, 2].map(|c| (fg[c] * a + bg[c] * (1.0 - a)).round().clamp(0.0, 255.0) as u8);
            img.put_pixel(x, y, Rgb(px));
        }
    }
    let caption = format!(
        "a {} {} {} on a {}{} background",
        SIZES[size as usize],
        COLORS[color as usize].0,
        SHAPES[shape as usize],
        BACKGROUNDS[background as usize].0,
        if gradient { " gradient" } else { "" }
    );
    ShapeExample {
        image: img,
        caption,
        labels,
    }
}

/// Every word a shapes caption can contain (used by the tiny model's tokenizer).
pub fn vocabulary() -> Vec<&'static str> {
    let mut v = vec!["a", "on", "background", "gradient"];
    v.extend(SIZES);
    v.extend(COLORS.iter().map(|c| c.0));
    v.extend(SHAPES);
    v.extend(BACKGROUNDS.iter().map(|c| c.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let cfg = ShapesConfig::DEFAULT;
        let a = generate(cfg, 7);
        let b = generate(cfg, 7);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.caption, b.caption);
        let c = generate(cfg, 8);
        assert_ne!(a.image.as_raw(), c.image.as_raw());
        let other_seed = generate(ShapesConfig { seed: 1, ..cfg }, 7);
        assert_ne!(a.image.as_raw(), other_seed.image.as_raw());
    }

    #[test]
    fn another_drawing_keeps_the_caption_and_changes_the_image() {
        let cfg = ShapesConfig::DEFAULT;
        let twin = ShapesConfig { draw: 1, ..cfg };
        let mut same_image = 0;
        for i in 0..50 {
            let (a, b) = (generate(cfg, i), generate(twin, i));
            assert_eq!(a.caption, b.caption);
            assert_eq!(a.labels, b.labels);
            same_image += (a.image.as_raw() == b.image.as_raw()) as usize;
            // Reproducible, and other drawings differ again.
            assert_eq!(b.image.as_raw(), generate(twin, i).image.as_raw());
        }
        assert_eq!(same_image, 0);
        assert_ne!(
            generate(twin, 3).image.as_raw(),
            generate(ShapesConfig { draw: 2, ..cfg }, 3).image.as_raw()
        );
    }

    #[test]
    fn labels_cover_every_class_and_match_caption() {
        let cfg = ShapesConfig::DEFAULT;
        let mut seen_shape = [0usize; 3];
        let mut seen_color = [0usize; 6];
        for i in 0..600 {
            let ex = generate(cfg, i);
            seen_shape[ex.labels.shape as usize] += 1;
            seen_color[ex.labels.color as usize] += 1;
            assert!(ex.caption.contains(SHAPES[ex.labels.shape as usize]));
            assert!(ex.caption.contains(COLORS[ex.labels.color as usize].0));
            for w in ex.caption.split(' ') {
                assert!(vocabulary().contains(&w), "word {w} not in the vocabulary");
            }
        }
        assert!(seen_shape.iter().all(|&n| n > 150), "{seen_shape:?}");
        assert!(seen_color.iter().all(|&n| n > 60), "{seen_color:?}");
    }

    #[test]
    fn shape_pixels_have_the_shape_colour() {
        // The centre pixel of a large shape is the foreground colour (within jitter).
        let cfg = ShapesConfig {
            size: 64,
            seed: 3,
            draw: 0,
        };
        let mut checked = 0;
        for i in 0..50 {
            let ex = generate(cfg, i);
            if ex.labels.size != 1 {
                continue;
            }
            // Find the pixel most similar to the nominal colour; it must be close.
            let target = COLORS[ex.labels.color as usize].1;
            let best = ex
                .image
                .pixels()
                .map(|p| {
                    (0..3)
                        .map(|c| (p.0[c] as i32 - target[c] as i32).abs())
                        .max()
                        .unwrap_or(255)
                })
                .min()
                .unwrap_or(255);
            assert!(best <= 14, "example {i}: closest pixel differs by {best}");
            checked += 1;
        }
        assert!(checked > 10);
    }
}
