//! `adt-bench train-encoder`: the built-in discriminator backbone.

use anyhow::{Context, bail};

use adt_tuner::backbone::{EncoderTrainConfig, ShapesEncoder, accuracy, train_encoder};

use crate::cli::{GlobalOpts, TrainEncoderArgs};
use crate::progress::Bar;

pub fn run(g: &GlobalOpts, a: &TrainEncoderArgs) -> anyhow::Result<()> {
    let cfg = EncoderTrainConfig {
        iters: a.iters,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        eval: a.eval,
    };
    let dev = crate::device::open(&a.device)?;
    let mut bar = Bar::new(a.iters, "encoder", g.quiet);
    let t = std::time::Instant::now();
    let vars = train_encoder(&cfg, &dev, &mut bar)?;
    bar.finish();
    let bytes = ShapesEncoder::to_bytes(&vars, true)?;
    // Accuracy of what is written (f16), on held-out examples.
    let enc = ShapesEncoder::from_bytes(&bytes, &dev)?;
    let acc = accuracy(&enc, a.eval, &dev)?;
    println!(
        "held-out accuracy ({} degraded examples): shape {:.4}, colour {:.4}, background {:.4}, size {:.4}; degradation {:.4} ({:.0} s)",
        a.eval,
        acc[0],
        acc[1],
        acc[2],
        acc[3],
        acc[4],
        t.elapsed().as_secs_f64()
    );
    std::fs::write(&a.out, &bytes).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "wrote {} (sha256 of tensors {})",
        a.out.display(),
        enc.sha256()
    );
    // The data set's labels; the degradation label is an auxiliary task (its hardest cases,
    // σ = 0.02 noise or a light blur, are near the limit of what 32×32 pixels show).
    if acc[..4].iter().any(|&x| x < a.min_accuracy) {
        bail!("accuracy below {} on some label", a.min_accuracy);
    }
    Ok(())
}
