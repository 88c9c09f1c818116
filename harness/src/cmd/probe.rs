//! `adt-bench probe`: the discriminator two-sample probe on image sets.

use anyhow::{Context, bail};

use crate::cli::{GlobalOpts, ProbeArgs};
use crate::exit::DataError;

/// Up to `n` images of a source at 32×32 (the shapes encoder's input).
fn load(spec: &str, n: usize) -> anyhow::Result<adt_plugin_api::HostTensor> {
    let s = adt_datasets::DataSpec::parse(spec).with_context(|| format!("cannot open {spec}"))?;
    crate::sampling::load_images(&s, n, 32)
}

pub fn run(g: &GlobalOpts, a: &ProbeArgs) -> anyhow::Result<()> {
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let real = load(&a.real, a.num)?;
    let fake = load(&a.generated, a.num)?;
    let (nr, nf) = (real.shape[0], fake.shape[0]);
    let n = nr.min(nf);
    if n < 4 {
        return Err(DataError(format!("the probe needs at least 4 pairs, got {n}")).into());
    }
    if nr != nf && !g.quiet {
        eprintln!("warning: {nr} real and {nf} generated images; using the first {n} pairs");
    }
    let dev = crate::device::open(&a.device)?;
    let per = 3 * 32 * 32;
    let real = candle_core::Tensor::from_slice(&real.data[..n * per], (n, 3, 32, 32), &dev)?;
    let fake = candle_core::Tensor::from_slice(&fake.data[..n * per], (n, 3, 32, 32), &dev)?;
    let Some(loss) = adt_tuner::disc::DiscLoss::parse(&a.loss) else {
        bail!(
            "unknown --loss {:?}: use non-saturating, hinge or siamese",
            a.loss
        );
    };
    let r = adt_tuner::probe::shapes_probe(
        adt_tuner::disc::DiscConfig {
            loss,
            lr: a.lr,
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
