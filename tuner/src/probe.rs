//! A discriminator two-sample probe: how well can a *fresh* discriminator (same architecture,
//! same settings, same seed) learn to separate a set of generated images from the real images
//! they correspond to? Train on one half of the pairs, report the similarity gap on the other
//! half. Lower held-out gap = generated images harder to tell from real ones. Unlike the gap in
//! a tuning log, this does not depend on the discriminator the generator was trained against.

use candle_core::{Device, Tensor};

use crate::disc::{DiscConfig, Discriminator};
use crate::{Error, Result};

/// The probe's result.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProbeResult {
    /// Pairs used for training.
    pub train_pairs: usize,
    /// Held-out pairs.
    pub eval_pairs: usize,
    /// Discriminator steps.
    pub steps: usize,
    /// Held-out real−fake gap after training (mean over held-out batches).
    pub heldout_gap: f64,
    /// Held-out discriminator loss after training.
    pub heldout_loss_d: f64,
    /// Training-batch gap at the last step.
    pub train_gap: f64,
}

/// Train a fresh discriminator on pairs `(real[i], fake[i])` of the first half and evaluate it
/// on the second half. Images `[N, 3, S, S]` in [-1, 1].
pub fn separability(
    make: &dyn Fn() -> Result<Discriminator>,
    real: &Tensor,
    fake: &Tensor,
    steps: usize,
    batch: usize,
    seed: u64,
) -> Result<ProbeResult> {
    let n = real.dim(0).map_err(|e| Error::Invalid(e.to_string()))?;
    if fake.dims() != real.dims() || n < 4 {
        return Err(Error::Invalid(format!(
            "the probe needs matching sets of at least 4 images (got {:?} and {:?})",
            real.dims(),
            fake.dims()
        )));
    }
    let half = n / 2;
    let mut d = make()?;
    let lr = d.config().lr;
    let b = batch.min(half).max(1);
    let pick = |t: &Tensor, start: usize, len: usize| {
        t.narrow(0, start, len)
            .map_err(|e| Error::Invalid(e.to_string()))
    };
    let mut train_gap = f64::NAN;
    for s in 0..steps {
        let start = (s * b) % (half - b + 1).max(1);
        let st = d.train_step(
            &pick(real, start, b)?,
            &pick(fake, start, b)?,
            seed.wrapping_add(s as u64),
            lr,
        )?;
        train_gap = st.real - st.fake;
    }
    let (mut gap, mut loss, mut count) = (0.0, 0.0, 0.0);
    let mut start = half;
    while start < n {
        let len = b.min(n - start);
        let st = d.eval_stats(
            &pick(real, start, len)?,
            &pick(fake, start, len)?,
            seed ^ 0xE7A1 ^ start as u64,
        )?;
        gap += (st.real - st.fake) * len as f64;
        loss += st.loss_d * len as f64;
        count += len as f64;
        start += len;
    }
    Ok(ProbeResult {
        train_pairs: half,
        eval_pairs: n - half,
        steps,
        heldout_gap: gap / count,
        heldout_loss_d: loss / count,
        train_gap,
    })
}

/// The probe with the built-in model's discriminator (shapes encoder).
pub fn shapes_probe(
    cfg: DiscConfig,
    real: &Tensor,
    fake: &Tensor,
    steps: usize,
    seed: u64,
    dev: &Device,
) -> Result<ProbeResult> {
    let make = || crate::adt::shapes_discriminator(cfg.clone(), seed, dev);
    separability(&make, real, fake, steps, 32, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{ShapesEncoder, shapes_batch};

    #[test]
    fn a_fresh_discriminator_separates_altered_images_better_than_real_ones() {
        let dev = Device::Cpu;
        let (real, _) =
            shapes_batch(adt_datasets::shapes::ShapesConfig::DEFAULT, 0, 32, &dev).unwrap();
        let (other, _) =
            shapes_batch(adt_datasets::shapes::ShapesConfig::DEFAULT, 500, 32, &dev).unwrap();
        let make = || {
            let enc = ShapesEncoder::builtin(&dev)?;
            Discriminator::new(
                Box::new(enc),
                DiscConfig {
                    lr: 1e-3,
                    ..DiscConfig::default()
                },
                0,
                &dev,
            )
        };
        // Other real images: nothing to separate. Colour-inverted images: easy.
        let same = separability(&make, &real, &other, 40, 8, 0).unwrap();
        let inverted = other.neg().unwrap();
        let easy = separability(&make, &real, &inverted, 40, 8, 0).unwrap();
        assert!(
            easy.heldout_gap > same.heldout_gap + 0.05,
            "{same:?} vs {easy:?}"
        );
    }
}
