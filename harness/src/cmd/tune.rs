//! `adt-bench tune`: ADT or the fine-tuning baseline on one model.

use anyhow::bail;

use adt_tuner::adt::Method;

use crate::cli::{GlobalOpts, TuneArgs};
use crate::engine::cells::{self, TuneJob};
use crate::engine::settings::TuneSettings;

pub fn run(g: &GlobalOpts, a: &TuneArgs) -> anyhow::Result<()> {
    let method = match a.method.parse::<crate::engine::settings::Method>()?.tuned() {
        Some(m) => m,
        None => bail!("`tune` tunes with `adt` or `ft` (`base` is the untuned model)"),
    };
    let job = TuneJob {
        model: a.model.spec()?,
        method,
        sampler: a.sampler.parse()?,
        seed: a.seed,
        settings: TuneSettings::from_args(a)?,
    };
    let out = a.resume.clone().unwrap_or_else(|| a.out.clone());
    let reg = crate::registry::load(g)?;
    let rows = cells::tune_model(&reg, &job, &out, a.stop_after, a.reset_optimizer, g.quiet)?;
    if job.settings.ema.is_some() {
        eprintln!(
            "moving average of the weights in {}",
            out.join("checkpoint/model/ema.safetensors").display()
        );
    }
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
