//! `adt-bench tune`: ADT or the fine-tuning baseline on one model.

use anyhow::{Context, bail};

use adt_tuner::adt::{Method, StartDist, TuneConfig, Tuner, shapes_discriminator, tune};
use adt_tuner::disc::{DiscConfig, DiscLoss};
use adt_tuner::paths::GradPath;

use crate::cli::{GlobalOpts, TuneArgs};
use crate::sampling::{self, SamplerSpec};

pub fn run(g: &GlobalOpts, a: &TuneArgs) -> anyhow::Result<()> {
    let method = match a.method.as_str() {
        "adt" => Method::Adt,
        "ft" => Method::Ft,
        m => bail!("unknown method `{m}` (adt or ft)"),
    };
    let path = GradPath::parse(&a.path)
        .with_context(|| format!("unknown gradient path `{}` (adt, drtune, full)", a.path))?;
    let loss = DiscLoss::parse(&a.disc_loss).with_context(|| {
        format!(
            "unknown discriminator loss `{}` (siamese, hinge, non-saturating)",
            a.disc_loss
        )
    })?;
    let start = parse_start(&a.start)?;
    if a.h == 0 || a.accum == 0 || a.accum > a.h {
        bail!("--h must be ≥ 1 and 1 ≤ --accum ≤ --h");
    }
    let spec: SamplerSpec = a.sampler.parse()?;
    let out = a.resume.clone().unwrap_or_else(|| a.out.clone());
    let reg = crate::registry::load(&g.plugin_path)?;
    let mut model = super::open_model(&reg, &a.model)?;
    let desc = model.describe()?;
    let samplers = sampling::find_sampler(&reg, &spec.name)?;
    let req = sampling::request(&desc, &spec, None, 0);
    let data_spec =
        adt_datasets::DataSpec::parse(&a.data).context("failed to open the training data")?;
    let data = adt_tuner::data::Batcher::new(&data_spec, desc.image_shape[1] as u32)
        .context("failed to open the training data")?;
    let disc_cfg = DiscConfig {
        loss,
        lr: a.d_lr,
        temperature: a.temperature,
        tau: a.tau,
        aug_color: a.aug_color,
        ..DiscConfig::default()
    };
    let cfg = TuneConfig {
        method,
        iters: a.iters,
        batch: a.batch,
        seed: a.seed,
        plan: req,
        start,
        k: a.k,
        k_random: a.k_random,
        path,
        guidance: a.guidance,
        detach_uncond: a.detach_uncond,
        lambda: a.lambda,
        h: a.h,
        lr: a.lr,
        warmup: a.warmup,
        d_warmup: a.d_warmup,
        clip: a.clip,
        accum: a.accum,
        disc: disc_cfg.clone(),
        max_non_finite: a.max_non_finite,
        checkpoint_every: a.checkpoint_every,
    };
    // The discriminator lives host-side, on the model's device.
    let dev = crate::device::open(&a.model.device)?;
    let disc = match method {
        Method::Adt => Some(discriminator(a, &desc.name, disc_cfg, &dev)?),
        Method::Ft => None,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("failed to create {}", out.display()))?;
    eprintln!(
        "{} `{}` with {spec} on {data_spec}: {} iterations of {} (model update every {}), path {}, \
         output in {}",
        a.method,
        desc.name,
        a.iters,
        a.batch,
        a.h,
        a.path,
        out.display()
    );
    let mut bar = crate::progress::Bar::new(a.iters, &a.method, g.quiet);
    let mut t = Tuner {
        model: &mut model,
        samplers: &samplers,
        disc,
        data,
        device: dev,
    };
    let result = tune(&mut t, &cfg, &out, a.stop_after, &mut bar);
    bar.finish();
    // The log as parquet too (also after a failure: the rows so far are the diagnosis).
    let csv = out.join("log.csv");
    if csv.exists()
        && let Err(e) = adt_reports::csv_to_parquet(&csv)
    {
        eprintln!("warning: could not write log.parquet: {e}");
    }
    let rows = result?;
    if std::env::var_os("ADT_REPORT_PEAK_MEMORY").is_some() {
        // For `adt-bench bench tune-memory`: the process's peak resident set.
        if let Some(kib) = peak_rss_kib() {
            eprintln!("peak_rss_kib={kib}");
        }
    }
    if let Some(r) = rows.last() {
        match method {
            Method::Adt => eprintln!(
                "iteration {}: D loss {:.4}, gap {:.4}, colour-mean error {:.4}; log in {}",
                r.iter,
                r.loss_d,
                r.disc_gap,
                r.color_mean_error,
                out.join("log.csv").display()
            ),
            Method::Ft => {
                let last = rows.iter().rev().find(|r| r.g_update);
                eprintln!(
                    "iteration {}: diffusion loss {:.4}; log in {}",
                    r.iter,
                    last.map_or(f64::NAN, |r| r.loss_diff),
                    out.join("log.csv").display()
                )
            }
        }
    }
    Ok(())
}

/// VmHWM of this process (Linux), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `uniform`, an index `N`, or an inclusive range `LO..HI`.
/// The discriminator of `--backbone` (default: the shapes encoder for `tiny`).
fn discriminator(
    a: &TuneArgs,
    model: &str,
    cfg: DiscConfig,
    dev: &candle_core::Device,
) -> anyhow::Result<adt_tuner::disc::Discriminator> {
    match a.backbone.as_deref() {
        Some("shapes") => Ok(shapes_discriminator(cfg, a.seed, dev)?),
        None if model == "tiny" => Ok(shapes_discriminator(cfg, a.seed, dev)?),
        Some(spec) if spec.starts_with("dinov2:") => {
            let path = std::path::Path::new(&spec["dinov2:".len()..]);
            adt_tuner::adt::dinov2_discriminator(path, cfg, a.seed, dev)
                .with_context(|| format!("failed to load the DINOv2 backbone {}", path.display()))
        }
        Some(other) => bail!("unknown --backbone `{other}` (shapes or dinov2:PATH)"),
        None => bail!(
            "ADT on `{model}` needs a discriminator backbone: pass --backbone dinov2:PATH (a \
             Hugging Face Dinov2Model folder, e.g. facebook/dinov2-small); the built-in `shapes` \
             encoder only knows the built-in data set"
        ),
    }
}

fn parse_start(s: &str) -> anyhow::Result<StartDist> {
    let bad = || format!("--start is `uniform`, an index or a range `LO..HI`, not `{s}`");
    if s == "uniform" {
        return Ok(StartDist::Uniform);
    }
    if let Some((lo, hi)) = s.split_once("..") {
        let lo: usize = lo.trim().parse().with_context(bad)?;
        let hi: usize = hi
            .trim()
            .trim_start_matches('=')
            .parse()
            .with_context(bad)?;
        if lo > hi {
            bail!("{}", bad());
        }
        return Ok(StartDist::Range(lo, hi));
    }
    Ok(StartDist::Fixed(s.parse().with_context(bad)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_distributions_parse() {
        assert_eq!(parse_start("uniform").unwrap(), StartDist::Uniform);
        assert_eq!(parse_start("3").unwrap(), StartDist::Fixed(3));
        assert_eq!(parse_start("0..2").unwrap(), StartDist::Range(0, 2));
        assert_eq!(parse_start("1..=4").unwrap(), StartDist::Range(1, 4));
        for bad in ["4..1", "x", "1..", "..3"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }
}
