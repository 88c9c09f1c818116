//! `adt-bench run`: the benchmark grid. Every model × method × train sampler × seed is tuned
//! once, then sampled with every eval sampler and scored: FID and KID against the real images of
//! the same captions, the built-in data set's recognisability controls, and the tuning log's
//! controls. Tuned checkpoints and samples live in a content-addressed cache under the output
//! folder, so a rerun or an extended grid reuses finished work and an interrupted tune resumes.
//!
//! Output: `metrics.csv` / `metrics.parquet` (long format), `report.md`, `manifest.json`,
//! `grids/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use sha2::{Digest, Sha256};

use crate::cli::{GlobalOpts, RunArgs, SampleArgs, TuneArgs};
use crate::cmd::fid::{self, Net, SetOptions};
use crate::sampling::{self, SamplerSpec};
use adt_metrics::arch::DIMS;

pub use adt_reports::metrics::MetricRow;

#[derive(Parser)]
struct TuneCli {
    #[command(flatten)]
    a: TuneArgs,
}

#[derive(Parser)]
struct SampleCli {
    #[command(flatten)]
    a: SampleArgs,
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache folder of one entry: `OUT/cache/KIND/LABEL-HASH`, the hash over `parts` (and the
/// version), the label for people.
fn cache_entry(a: &RunArgs, kind: &str, label: &str, parts: &[&str]) -> PathBuf {
    let mut all = vec![kind, env!("CARGO_PKG_VERSION")];
    all.extend_from_slice(parts);
    a.out
        .join("cache")
        .join(kind)
        .join(format!("{}-{}", label.replace(':', "-"), key(&all)))
}

fn file_sha256(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Tune `model` with `method` (cached by everything that determines the result); returns the
/// tune's folder and its checkpoint's weights file. A folder without `done.json` is an interrupted tune: resumed.
#[allow(clippy::too_many_arguments)]
fn tuned(
    g: &GlobalOpts,
    a: &RunArgs,
    model: &str,
    base_hash: &str,
    method: &str,
    train: &SamplerSpec,
    seed: u64,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let extra: Vec<&str> = a.tune_args.split_whitespace().collect();
    let dir = cache_entry(
        a,
        "tune",
        &format!("{model}-{method}-{train}-s{seed}"),
        &[
            model,
            base_hash,
            method,
            &train.to_string(),
            &seed.to_string(),
            &a.tune_args,
        ],
    );
    let weights = dir.join("checkpoint/model/model.safetensors");
    if dir.join("done.json").exists() && weights.exists() {
        return Ok((dir, weights));
    }
    let mut argv: Vec<String> = vec![
        "tune".into(),
        "--model".into(),
        model.into(),
        "--device".into(),
        a.device.clone(),
        "--method".into(),
        method.into(),
        "--sampler".into(),
        train.to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    if dir.join("state.json").exists() {
        argv.extend(["--resume".into(), dir.display().to_string()]);
    } else {
        argv.extend(["--out".into(), dir.display().to_string()]);
    }
    let cli = TuneCli::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("bad --tune-args {:?}: {e}", a.tune_args))?;
    super::tune::run(g, &cli.a)
        .with_context(|| format!("{method} of `{model}` with {train} (seed {seed})"))?;
    if !weights.exists() {
        bail!("the tune in {} wrote no model checkpoint", dir.display());
    }
    std::fs::write(
        dir.join("done.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "argv": argv }))?,
    )?;
    Ok((dir, weights))
}

/// Samples of one model state with one sampler (cached); returns the image folder.
#[allow(clippy::too_many_arguments)]
fn sampled(
    g: &GlobalOpts,
    a: &RunArgs,
    model: &str,
    weights: Option<&Path>,
    weights_hash: &str,
    spec: &SamplerSpec,
    guidance: f32,
    seed: u64,
) -> anyhow::Result<PathBuf> {
    let dir = cache_entry(
        a,
        "samples",
        &format!("{model}-{spec}-s{seed}"),
        &[
            model,
            weights_hash,
            &spec.to_string(),
            &guidance.to_string(),
            &seed.to_string(),
            &a.num.to_string(),
        ],
    );
    if dir.join("sample.json").exists() {
        return Ok(dir);
    }
    let mut argv: Vec<String> = vec![
        "sample".into(),
        "--model".into(),
        model.into(),
        "--device".into(),
        a.device.clone(),
        "--sampler".into(),
        spec.to_string(),
        "--guidance".into(),
        guidance.to_string(),
        "-n".into(),
        a.num.to_string(),
        "--batch".into(),
        a.batch.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--out".into(),
        dir.display().to_string(),
    ];
    if let Some(w) = weights {
        argv.extend(["--weights".into(), w.display().to_string()]);
    }
    let cli = SampleCli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    // `sample` writes sample.json last: a folder without it is rewritten.
    super::sample::run(g, &cli.a)?;
    Ok(dir)
}

fn load_folder(dir: &Path) -> anyhow::Result<Vec<image::RgbImage>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            Ok(image::open(p)
                .with_context(|| format!("cannot decode {}", p.display()))?
                .to_rgb8())
        })
        .collect()
}

fn controls(images: &[image::RgbImage], prompts: &[String]) -> [(&'static str, f64); 3] {
    let (mut bg, mut col, mut noise, mut n) = (0.0, 0.0, 0.0, 0.0);
    for (img, p) in images.iter().zip(prompts) {
        if let Some(s) = adt_datasets::shapes_score::score(img, p) {
            bg += s.background_ok as u8 as f64;
            col += s.color_ok as u8 as f64;
            noise += s.noise;
            n += 1.0;
        }
    }
    let v = |x: f64| if n == 0.0 { f64::NAN } else { x / n };
    [
        ("background_accuracy", v(bg)),
        ("shape_color_accuracy", v(col)),
        ("residual_noise", v(noise)),
    ]
}

/// Means of a tuning log's columns over the first and the last tenth of the iterations where
/// each column is logged (L_diff only on model updates; at least one value each).
fn log_controls(dir: &Path) -> anyhow::Result<Vec<(&'static str, f64, usize)>> {
    let path = dir.join("log.csv");
    let mut rd =
        csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let head = rd.headers()?.clone();
    let rows: Vec<csv::StringRecord> = rd.records().collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (first, last, col) in [
        ("tune_loss_diff_first", "tune_loss_diff_last", "loss_diff"),
        (
            "tune_color_mean_error_first",
            "tune_color_mean_error_last",
            "color_mean_error",
        ),
        ("tune_disc_gap_first", "tune_disc_gap_last", "disc_gap"),
    ] {
        let Some(i) = head.iter().position(|h| h == col) else {
            continue;
        };
        let vals: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get(i).and_then(|v| v.parse::<f64>().ok()))
            .filter(|v| v.is_finite())
            .collect();
        if vals.is_empty() {
            continue;
        }
        let k = (vals.len() / 10).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        out.push((first, mean(&vals[..k]), k));
        out.push((last, mean(&vals[vals.len() - k..]), k));
    }
    Ok(out)
}

pub fn run(g: &GlobalOpts, a: &RunArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let parse = |v: &[String]| -> anyhow::Result<Vec<SamplerSpec>> {
        v.iter().map(|s| s.parse()).collect()
    };
    let train = parse(&a.train_samplers)?;
    let eval = parse(&a.eval_samplers)?;
    for m in &a.methods {
        if !["base", "ft", "adt"].contains(&m.as_str()) {
            bail!("unknown method `{m}` in --methods (base, ft, adt)");
        }
    }
    if a.num < 2 {
        bail!("-n must be at least 2 (FID needs two images per set)");
    }
    if a.seeds.is_empty() || a.models.is_empty() || eval.is_empty() {
        bail!("--models, --seeds and --eval-samplers must each name at least one");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("failed to create {}", a.out.display()))?;
    let reg = crate::registry::load(&g.plugin_path)?;

    // Real images of the evaluation captions.
    let prompts = sampling::eval_prompts(a.num);
    let cfg = adt_datasets::shapes::ShapesConfig::DEFAULT;
    let real: Vec<image::RgbImage> = (0..a.num as u64)
        .map(|i| adt_datasets::shapes::generate(cfg, adt_datasets::shapes::EVAL_OFFSET + i).image)
        .collect();
    let real_dir = a.out.join("real");
    sampling::write_images(&real_dir, &real, &prompts)?;
    sampling::write_grid(&a.out.join("grids/real.png"), &real)?;

    let mode = adt_metrics::Mode::Clean;
    let mut net = Net::new(&a.inception, g.quiet);
    let opts = SetOptions {
        mode,
        batch: 32,
        skip_bad: false,
        num: a.num,
        use_cache: true,
        quiet: g.quiet,
    };
    let real_stats = fid::set_stats(&real_dir.display().to_string(), &mut net, &opts)?;
    let real_feats = real_stats
        .features
        .clone()
        .context("the real set has no features")?;

    let mut rows: Vec<MetricRow> = Vec::new();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let push =
        |rows: &mut Vec<MetricRow>,
         (model, method, ts, es, steps, gd, seed): (&str, &str, &str, &str, usize, f32, u64),
         metric: &str,
         value: f64,
         n: usize| {
            rows.push(MetricRow {
                model: model.into(),
                method: method.into(),
                train_sampler: ts.into(),
                eval_sampler: es.into(),
                steps,
                guidance: gd,
                seed,
                metric: metric.into(),
                value,
                ci_low: None,
                ci_high: None,
                n,
            })
        };

    for model in &a.models {
        if model != "tiny" {
            bail!(
                "`run` evaluates with the built-in data set's captions and controls, which only \
                 `tiny` is trained on; `{model}` needs the SD-family evaluation (issue 6)"
            );
        }
        let desc = {
            let m = super::open_model(
                &reg,
                &crate::cli::ModelOpts {
                    model: model.clone(),
                    weights: None,
                    device: a.device.clone(),
                    init_seed: 0,
                },
            )?;
            m.describe()?
        };
        let base_hash = desc.weights_hash.clone().unwrap_or_else(|| "none".into());
        hashes.insert(format!("{model}/base weights"), base_hash.clone());
        let guidance = a.guidance.unwrap_or(desc.default_guidance);
        for &seed in &a.seeds {
            // (method, train sampler label, weights file, weights hash)
            let mut states: Vec<(String, String, Option<PathBuf>, String)> = Vec::new();
            for method in &a.methods {
                if method == "base" {
                    states.push(("base".into(), "-".into(), None, base_hash.clone()));
                    continue;
                }
                for ts in &train {
                    let (dir, w) = tuned(g, a, model, &base_hash, method, ts, seed)?;
                    let wh = file_sha256(&w)?;
                    hashes.insert(
                        format!("{model}/{method}/{ts}/seed {seed} weights"),
                        wh.clone(),
                    );
                    for (name, v, n) in log_controls(&dir)? {
                        push(
                            &mut rows,
                            (model, method, &ts.to_string(), "-", 0, guidance, seed),
                            name,
                            v,
                            n,
                        );
                    }
                    states.push((method.clone(), ts.to_string(), Some(w), wh));
                }
            }
            for (method, ts, w, wh) in &states {
                for es in &eval {
                    let dir = sampled(g, a, model, w.as_deref(), wh, es, guidance, seed)?;
                    let images = load_folder(&dir)?;
                    let label = format!("{model}-{method}-{}-{es}-s{seed}", ts.replace(':', "-"))
                        .replace(':', "-");
                    sampling::write_grid(
                        &a.out.join("grids").join(format!("{label}.png")),
                        &images,
                    )?;
                    let s = fid::set_stats(&dir.display().to_string(), &mut net, &opts)?;
                    let f = adt_metrics::stats::fid(&real_stats.gaussian, &s.gaussian)?;
                    let feats = s.features.as_ref().context("no features")?;
                    let k = adt_metrics::stats::kid(&real_feats, feats, DIMS, 100, 1000, 0)?;
                    let cell = (
                        model.as_str(),
                        method.as_str(),
                        ts.as_str(),
                        &*es.to_string(),
                        es.steps,
                        guidance,
                        seed,
                    );
                    push(&mut rows, cell, "fid", f.fid, images.len());
                    push(&mut rows, cell, "kid", k.kid, images.len());
                    for (name, v) in controls(&images, &prompts) {
                        push(&mut rows, cell, name, v, images.len());
                    }
                }
            }
        }
    }

    // The frame.
    adt_reports::metrics::write(&rows, &a.out)?;
    let (_, inception_sha, _) = net.get()?;
    let manifest = serde_json::json!({
        "adt_bench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "command": std::env::args().collect::<Vec<_>>(),
        "config": {
            "models": a.models, "methods": a.methods, "train_samplers": a.train_samplers,
            "eval_samplers": a.eval_samplers, "seeds": a.seeds, "num": a.num, "batch": a.batch,
            "guidance": a.guidance, "tune_args": a.tune_args, "device": a.device,
        },
        "fid": { "mode": mode.name(), "inception_sha256": inception_sha,
                 "real": format!("builtin:shapes?offset={} (first {})", adt_datasets::shapes::EVAL_OFFSET, a.num) },
        "plugins": reg.plugins().iter().map(|p| serde_json::json!({
            "name": p.name, "kind": format!("{:?}", p.kind), "version": p.version,
        })).collect::<Vec<_>>(),
        "hashes": hashes,
        "machine": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH,
                     "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    let md = report_md(&rows, a)?;
    std::fs::write(a.out.join("report.md"), &md)?;
    if !g.quiet {
        print!("{md}");
    }
    eprintln!(
        "wrote {} ({:.0} s)",
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn git_commit() -> Option<String> {
    let o = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The markdown report: FID/KID and controls per model × method × eval sampler (means over
/// seeds), and the tuning controls.
pub fn report_md(rows: &[MetricRow], a: &RunArgs) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "# adt-bench run\n")?;
    writeln!(
        md,
        "{} images per cell, seeds {:?}; FID and KID in clean-fid's `clean` mode against the real \
         images of the same captions. With fewer than 2048 images the covariance is rank-deficient: \
         FID is biased upward and comparable only within this report.\n",
        a.num, a.seeds
    )?;
    // (model, method's rank in --methods, method, train, eval) → metric → values over seeds.
    type Cell = (String, usize, String, String, String);
    let mut cells: BTreeMap<Cell, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let rank = |m: &str| a.methods.iter().position(|x| x == m).unwrap_or(usize::MAX);
    for r in rows {
        cells
            .entry((
                r.model.clone(),
                rank(&r.method),
                r.method.clone(),
                r.train_sampler.clone(),
                r.eval_sampler.clone(),
            ))
            .or_default()
            .entry(r.metric.clone())
            .or_default()
            .push(r.value);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    writeln!(md, "## Evaluation\n")?;
    writeln!(
        md,
        "| model | method | train sampler | eval sampler | FID | KID | background acc. | shape-colour acc. | residual noise |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for ((m, _, me, ts, es), v) in &cells {
        if es == "-" {
            continue;
        }
        let g = |k: &str| v.get(k).map(|x| mean(x)).unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {m} | {me} | {ts} | {es} | {:.2} | {:.4} | {:.3} | {:.3} | {:.2} |",
            g("fid"),
            g("kid"),
            g("background_accuracy"),
            g("shape_color_accuracy"),
            g("residual_noise")
        )?;
    }
    writeln!(md, "\n## Tuning controls (first → last tenth of the log)\n")?;
    writeln!(
        md,
        "| model | method | train sampler | L_diff | colour-mean error | discriminator gap |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for ((m, _, me, ts, es), v) in &cells {
        if es != "-" {
            continue;
        }
        let pair = |k: &str| {
            let f = v.get(&format!("tune_{k}_first")).map(|x| mean(x));
            let l = v.get(&format!("tune_{k}_last")).map(|x| mean(x));
            match (f, l) {
                (Some(f), Some(l)) => format!("{f:.4} → {l:.4}"),
                _ => "—".into(),
            }
        };
        writeln!(
            md,
            "| {m} | {me} | {ts} | {} | {} | {} |",
            pair("loss_diff"),
            pair("color_mean_error"),
            pair("disc_gap")
        )?;
    }
    writeln!(
        md,
        "\nBackground / shape-colour accuracy: the image's border colour / a region of the shape's \
         colour match the caption. Residual noise: mean |pixel − 3×3 box blur| (0–255)."
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, ts: &str, es: &str, seed: u64, metric: &str, value: f64) -> MetricRow {
        MetricRow {
            model: "tiny".into(),
            method: method.into(),
            train_sampler: ts.into(),
            eval_sampler: es.into(),
            steps: es
                .rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            guidance: 2.0,
            seed,
            metric: metric.into(),
            value,
            ci_low: None,
            ci_high: None,
            n: 64,
        }
    }

    /// The report's tables, as users diff them in CI.
    #[test]
    fn report_tables_snapshot() {
        let mut rows = Vec::new();
        for seed in [0, 1] {
            let s = seed as f64;
            for (method, ts, base) in [
                ("base", "-", 220.0),
                ("ft", "ddim:10", 221.0),
                ("adt", "ddim:10", 215.0),
            ] {
                for (es, off) in [("ddim:10", 0.0), ("dpm++2m:10", 1.5)] {
                    let cell = |m: &str, v: f64| row(method, ts, es, seed, m, v);
                    rows.push(cell("fid", base + off + s));
                    rows.push(cell("kid", (base + off + s) / 1500.0));
                    rows.push(cell("background_accuracy", 1.0));
                    rows.push(cell("shape_color_accuracy", 0.875 + 0.0625 * s));
                    rows.push(cell("residual_noise", 3.5 + off));
                }
                if method != "base" {
                    rows.push(row(method, ts, "-", seed, "tune_loss_diff_first", 0.039));
                    rows.push(row(
                        method,
                        ts,
                        "-",
                        seed,
                        "tune_loss_diff_last",
                        0.05 + 0.01 * s,
                    ));
                    rows.push(row(
                        method,
                        ts,
                        "-",
                        seed,
                        "tune_color_mean_error_first",
                        0.022,
                    ));
                    rows.push(row(
                        method,
                        ts,
                        "-",
                        seed,
                        "tune_color_mean_error_last",
                        0.03,
                    ));
                    if method == "adt" {
                        rows.push(row(method, ts, "-", seed, "tune_disc_gap_first", 0.2));
                        rows.push(row(method, ts, "-", seed, "tune_disc_gap_last", 0.25));
                    }
                }
            }
        }
        let args = RunArgs {
            models: vec!["tiny".into()],
            methods: vec!["base".into(), "ft".into(), "adt".into()],
            train_samplers: vec!["ddim:10".into()],
            eval_samplers: vec!["ddim:10".into(), "dpm++2m:10".into()],
            seeds: vec![0, 1],
            num: 64,
            batch: 32,
            guidance: None,
            tune_args: crate::cli::DEFAULT_TUNE_ARGS.into(),
            device: "cpu".into(),
            inception: crate::cli::InceptionOpts {
                inception_weights: None,
                no_download: true,
            },
            out: "unused".into(),
        };
        insta::assert_snapshot!(report_md(&rows, &args).unwrap());
    }
}
