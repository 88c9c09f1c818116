//! `adt-bench probe`: the discriminator two-sample probe on image sets.

use anyhow::{Context, bail};

use crate::cli::{GlobalOpts, ProbeArgs};
use crate::exit::DataError;

/// Up to `n` images of a source at 32×32, as `[n, 3, 32, 32]` in [-1, 1].
fn load(spec: &str, n: usize) -> anyhow::Result<(usize, Vec<f32>)> {
    let s = adt_datasets::DataSpec::parse(spec).with_context(|| format!("cannot open {spec}"))?;
    let mut data = Vec::new();
    let mut count = 0;
    for r in adt_datasets::open_resized(&s, 32)?.take(n) {
        let rec = r.map_err(|e| DataError(e.to_string()))?;
        data.extend(adt_datasets::transform::to_chw_signed(&rec.image));
        count += 1;
    }
    Ok((count, data))
}

pub fn run(g: &GlobalOpts, a: &ProbeArgs) -> anyhow::Result<()> {
    let (nr, real) = load(&a.real, a.num)?;
    let (nf, fake) = load(&a.generated, a.num)?;
    let n = nr.min(nf);
    if n < 4 {
        return Err(DataError(format!("the probe needs at least 4 pairs, got {n}")).into());
    }
    if nr != nf && !g.quiet {
        eprintln!("warning: {nr} real and {nf} generated images; using the first {n} pairs");
    }
    let dev = candle_core::Device::Cpu;
    let per = 3 * 32 * 32;
    let real = candle_core::Tensor::from_vec(real[..n * per].to_vec(), (n, 3, 32, 32), &dev)?;
    let fake = candle_core::Tensor::from_vec(fake[..n * per].to_vec(), (n, 3, 32, 32), &dev)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let Some(loss) = adt_tuner::disc::DiscLoss::parse(&a.loss) else {
        bail!(
            "unknown --loss {:?}: use non-saturating, hinge or siamese",
            a.loss
        );
    };
    let r = adt_tuner::probe::shapes_probe(
        adt_tuner::disc::DiscConfig {
            loss,
            ..Default::default()
        },
        &real,
        &fake,
        a.steps,
        a.seed,
        &dev,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "held-out accuracy {:.4}, AUC {:.4}, score gap {:.4} ({:?} discriminator, {} steps on {} + {} images; {} + {} held out; 0.5 = indistinguishable)",
            r.heldout_accuracy,
            r.heldout_auc,
            r.heldout_gap,
            r.loss,
            r.steps,
            r.train_pairs,
            r.train_pairs,
            r.eval_pairs,
            r.eval_pairs
        );
    }
    Ok(())
}
