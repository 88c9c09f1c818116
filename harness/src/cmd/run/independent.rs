//! A second distance beside Inception's for the built-in data set: the Fréchet distance and
//! KID on the embeddings of an encoder trained apart from the discriminator's backbone (its own
//! initialisation, disjoint training examples). Inception was trained on photographs; this
//! encoder knows 32×32 shapes, and that it is not the discriminator's means ADT cannot have
//! been optimised against it.

use adt_metrics::stats::{FeatureStats, Gaussian, fid, kid};
use adt_tuner::backbone::ShapesEncoder;
use anyhow::Context;
use candle_core::{Device, Tensor};

/// The encoder and the reference set's embeddings.
pub struct Independent {
    enc: ShapesEncoder,
    dim: usize,
    real: Vec<f32>,
    real_gaussian: Gaussian,
}

/// Images per forward pass.
const BATCH: usize = 64;

impl Independent {
    /// Load the encoder and embed the reference images.
    pub fn new(real: &[image::RgbImage]) -> anyhow::Result<Self> {
        let enc = ShapesEncoder::independent(&Device::Cpu)
            .context("loading the independent shapes encoder")?;
        let (real, dim) = embed(&enc, real)?;
        Ok(Independent {
            enc,
            dim,
            real_gaussian: gaussian(&real, dim),
            real,
        })
    }

    /// (Fréchet distance, KID) of `images` against the reference set.
    pub fn distances(&self, images: &[image::RgbImage]) -> anyhow::Result<(f64, f64)> {
        let (x, dim) = embed(&self.enc, images)?;
        anyhow::ensure!(dim == self.dim, "embedding sizes differ");
        let fd = fid(&self.real_gaussian, &gaussian(&x, dim))?.fid;
        let k = kid(&self.real, &x, dim, 100, 1000, 0)?.kid;
        Ok((fd, k))
    }
}

/// Embeddings `n × C` of `images` (all of one size).
fn embed(enc: &ShapesEncoder, images: &[image::RgbImage]) -> anyhow::Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut dim = 0;
    for chunk in images.chunks(BATCH) {
        let (w, h) = chunk[0].dimensions();
        let mut data = Vec::with_capacity(chunk.len() * 3 * (w * h) as usize);
        for img in chunk {
            anyhow::ensure!(
                img.dimensions() == (w, h),
                "images of different sizes in one set"
            );
            data.extend(adt_datasets::transform::to_chw_signed(img));
        }
        let x = Tensor::from_vec(data, (chunk.len(), 3, h as usize, w as usize), &Device::Cpu)?;
        let e = enc.embedding(&x)?;
        dim = e.dim(1)?;
        out.extend(e.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((out, dim))
}

fn gaussian(x: &[f32], dim: usize) -> Gaussian {
    let mut s = FeatureStats::new(dim);
    s.add(x);
    s.gaussian()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(source: &str, n: usize) -> Vec<image::RgbImage> {
        let spec = adt_datasets::DataSpec::parse(source).unwrap();
        adt_datasets::open(&spec)
            .unwrap()
            .take(n)
            .map(|r| r.unwrap().image)
            .collect()
    }

    /// The distance sees what FID is meant to: zero for the set itself (KID's unbiased
    /// estimate is not, for a set against itself), small for another
    /// drawing of the same captions, larger for the same images with pixel noise, and larger
    /// still for other content (flat grey).
    #[test]
    fn the_independent_distance_orders_sets_by_realism() {
        let real = shapes("builtin:shapes?offset=1000000", 64);
        let ind = Independent::new(&real).unwrap();
        let (same, _) = ind.distances(&real).unwrap();
        let (redrawn, _) = ind
            .distances(&shapes("builtin:shapes?offset=1000000&draw=1", 64))
            .unwrap();
        assert!(same.abs() < 1e-4 * redrawn, "{same} vs {redrawn}");
        let noisy: Vec<image::RgbImage> = real
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let mut img = img.clone();
                for (j, p) in img.pixels_mut().enumerate() {
                    for c in 0..3 {
                        let h = (i * 7919 + j * 31 + c * 17) as u32;
                        let d = (h.wrapping_mul(2_654_435_761) >> 27) as i32 - 16;
                        p.0[c] = (p.0[c] as i32 + d).clamp(0, 255) as u8;
                    }
                }
                img
            })
            .collect();
        let (noise, _) = ind.distances(&noisy).unwrap();
        let grey = vec![image::RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128])); 64];
        let (flat, _) = ind.distances(&grey).unwrap();
        assert!(redrawn < noise && noise < flat, "{redrawn} {noise} {flat}");
        // Not the discriminator's backbone.
        assert_ne!(
            ShapesEncoder::independent(&Device::Cpu).unwrap().sha256(),
            ShapesEncoder::builtin(&Device::Cpu).unwrap().sha256()
        );
    }
}
