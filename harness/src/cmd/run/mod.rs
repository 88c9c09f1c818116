//! `adt-bench run`: the benchmark grid. Every model × method × train sampler × seed is tuned
//! once, then sampled with every eval sampler and scored: FID and KID against the real images of
//! the same captions, the built-in data set's recognisability controls, and the tuning log's
//! controls. Tuned checkpoints and samples live in a content-addressed cache under the output
//! folder, so a rerun or an extended grid reuses finished work and an interrupted tune resumes.
//!
//! Output: `metrics.csv` / `metrics.parquet` (long format), `report.md`, `manifest.json`,
//! `grids/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cli::{GlobalOpts, RunArgs};
use crate::engine::evaluate::{self as fid, Net, SetOptions};
use crate::engine::{
    self, cells,
    plan::{CellState, SampleCell, TuneCell},
    settings::{Method, ModelSpec},
};
use crate::sampling::{self, SamplerSpec};

use adt_metrics::arch::DIMS;

pub use adt_reports::metrics::MetricRow;

mod categories;
pub mod config;
mod independent;
mod intervals;
pub mod mechanism;

/// Run one tune cell unless its cache entry is done; returns its checkpoint's weights file.
/// An interrupted tune resumes from its checkpoint.
fn tuned(reg: &adt_plugin_host::Registry, cell: &TuneCell, quiet: bool) -> anyhow::Result<PathBuf> {
    if cell.state() == CellState::Done {
        return Ok(cell.weights());
    }
    let job = &cell.job;
    cells::tune_model(reg, job, &cell.dir, None, false, quiet).with_context(|| {
        format!(
            "{} of `{}` with {} (seed {})",
            cells::method_name(job.method),
            job.model.plugin,
            job.sampler,
            job.seed
        )
    })?;
    let weights = cell.weights();
    if !weights.exists() {
        bail!(
            "the tune in {} wrote no model checkpoint",
            cell.dir.display()
        );
    }
    std::fs::write(
        cell.dir.join("done.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": cell.keyed,
            "command": job.command(&cell.dir).join(" "),
        }))?,
    )?;
    Ok(weights)
}

/// Samples of one model state with one eval sampler, unless its cache entry is done.
#[allow(clippy::too_many_arguments)]
fn sampled(
    reg: &adt_plugin_host::Registry,
    cell: &SampleCell,
    model: &ModelSpec,
    sampler: &SamplerSpec,
    guidance: f32,
    prompts: &[String],
    batch: usize,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<PathBuf> {
    if cell.state() == CellState::Done {
        return Ok(cell.dir.clone());
    }
    let job = cells::SampleJob {
        model: model.clone(),
        sampler: sampler.clone(),
        spacing: None,
        guidance: Some(guidance),
        prompts: prompts.to_vec(),
        batch,
        seed,
        init: None,
        img2img: None,
    };
    let done = cells::sample_images(reg, &job, &cell.dir, "sample", quiet)?;
    let mut meta = done.meta;
    meta["settings"] = cell.keyed.clone();
    // `sample.json` last: a folder without it is sampled again.
    cells::finish_samples(&cell.dir, &meta)?;
    Ok(cell.dir.clone())
}

/// Wall time per stage of a run, in the order the stages first ran.
#[derive(Default)]
struct Stages(Vec<(&'static str, f64)>);

impl Stages {
    /// Add the time since `since` to `stage`.
    fn add(&mut self, stage: &'static str, since: std::time::Instant) {
        let dt = since.elapsed().as_secs_f64();
        match self.0.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, t)) => *t += dt,
            None => self.0.push((stage, dt)),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(s, t)| (s.to_string(), serde_json::json!((t * 10.0).round() / 10.0)))
                .collect(),
        )
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(s, t)| format!("{s} {t:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The evaluation inputs of a run's options.
fn eval_inputs(a: &RunArgs) -> anyhow::Result<engine::inputs::EvalInputs> {
    engine::inputs::resolve(
        a.prompts.as_deref(),
        a.prompt_column.as_deref(),
        a.eval_data.as_deref(),
        a.floor_data.as_deref(),
        a.eval_subset.parse()?,
        a.fid_ref.as_deref(),
        a.num,
    )
}

fn file_sha256(p: &Path) -> anyhow::Result<String> {
    adt_plugin_kit::sha256_file(p).with_context(|| format!("cannot read {}", p.display()))
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
            adt_datasets::read_image_file(p)
                .map_err(|e| anyhow::anyhow!("cannot decode {}: {e}", p.display()))
        })
        .collect()
}

/// The built-in data set's recognisability controls; none when no prompt is one of its
/// captions.
fn controls(images: &[image::RgbImage], prompts: &[String]) -> Vec<(&'static str, f64)> {
    let (mut bg, mut col, mut noise, mut n) = (0.0, 0.0, 0.0, 0.0);
    for (img, p) in images.iter().zip(prompts) {
        if let Some(s) = adt_datasets::shapes_score::score(img, p) {
            bg += s.background_ok as u8 as f64;
            col += s.color_ok as u8 as f64;
            noise += s.noise;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return Vec::new();
    }
    vec![
        ("background_accuracy", bg / n),
        ("shape_color_accuracy", col / n),
        ("residual_noise", noise / n),
    ]
}

/// A tuning log (`log.csv`), read once: per column, the (iteration, value) pairs where the
/// value is finite (L_diff is logged only on model updates).
struct TuneLog {
    columns: BTreeMap<String, Vec<(f64, f64)>>,
}

impl TuneLog {
    fn read(dir: &Path) -> anyhow::Result<TuneLog> {
        let path = dir.join("log.csv");
        let mut rd = csv::Reader::from_path(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let head = rd.headers()?.clone();
        let it = head
            .iter()
            .position(|h| h == "iter")
            .with_context(|| format!("{} has no `iter` column", path.display()))?;
        let mut columns: BTreeMap<String, Vec<(f64, f64)>> =
            head.iter().map(|h| (h.to_string(), Vec::new())).collect();
        for r in rd.records() {
            let r = r.with_context(|| format!("cannot read {}", path.display()))?;
            let Some(x) = r.get(it).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            for (h, v) in head.iter().zip(r.iter()) {
                if let Ok(y) = v.parse::<f64>()
                    && y.is_finite()
                    && let Some(c) = columns.get_mut(h)
                {
                    c.push((x, y));
                }
            }
        }
        Ok(TuneLog { columns })
    }

    fn column(&self, col: &str) -> &[(f64, f64)] {
        self.columns.get(col).map_or(&[], |v| v.as_slice())
    }

    /// Means of the controls over the first and the last tenth of the iterations where each
    /// is logged (at least one value each).
    fn controls(&self) -> Vec<(&'static str, f64, usize)> {
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
            let vals: Vec<f64> = self.column(col).iter().map(|p| p.1).collect();
            if vals.is_empty() {
                continue;
            }
            let k = (vals.len() / 10).max(1);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            out.push((first, mean(&vals[..k]), k));
            out.push((last, mean(&vals[vals.len() - k..]), k));
        }
        out
    }

    /// A moving mean (window 9) of one column, against the iteration.
    fn curve(&self, col: &str) -> Vec<(f64, f64)> {
        let pts = self.column(col);
        let w = 9usize;
        (0..pts.len())
            .map(|i| {
                let lo = i.saturating_sub(w / 2);
                let hi = (i + w / 2 + 1).min(pts.len());
                let m = pts[lo..hi].iter().map(|p| p.1).sum::<f64>() / (hi - lo) as f64;
                (pts[i].0, m)
            })
            .collect()
    }
}

pub fn run(g: &GlobalOpts, a: &RunArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut stages = Stages::default();
    // Plan: flags and the config file, resolved once.
    let (resolved_args, extras) = config::apply(a)?;
    let a = &resolved_args;
    let given = |id: &str| a.explicit.iter().chain(&extras.given).any(|e| e == id);
    let methods: Vec<Method> = a
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<anyhow::Result<_>>()?;
    let parse = |v: &[String]| -> anyhow::Result<Vec<SamplerSpec>> {
        v.iter().map(|s| s.parse()).collect()
    };
    let train = parse(&a.train_samplers)?;
    let eval = parse(&a.eval_samplers)?;
    let reference: Option<SamplerSpec> = match a.reference_sampler.as_str() {
        "none" => None,
        s => Some(s.parse().context("--reference-sampler")?),
    };
    let mut tune = engine::plan::run_default_tune();
    if let Some(t) = &extras.tune {
        tune = tune.overlay(t).context("[tune] in the config file")?;
    }
    if let Some(s) = &a.tune_args {
        tune = tune
            .overlay(&config::tune_args_overlay(s)?)
            .with_context(|| format!("--tune-args {s:?}"))?;
    }
    if let Some(d) = &a.train_data {
        tune.data = d.clone();
    }
    let tables = config::model_tables(a, &extras)?;
    let reg = crate::registry::load(g)?;

    // The evaluation inputs: prompts (with categories), the FID reference.
    let inputs = eval_inputs(a)?;
    let prompts = inputs.prompts.prompts.clone();
    let prompts_hash = inputs.prompts.sha256();
    let plan = engine::plan::build(
        &reg,
        &engine::plan::PlanInput {
            models: &a.models,
            methods: &methods,
            seeds: &a.seeds,
            num: prompts.len(),
            batch: a.batch,
            device: a.device.parse()?,
            guidance: a.guidance,
            train_samplers: given("train_samplers").then_some(train.as_slice()),
            eval_samplers: given("eval_samplers").then_some(eval.as_slice()),
            reference: given("reference_sampler").then_some(reference.as_ref()),
            tune,
            tables: &tables,
            scores: &a.scores,
            out: &a.out,
        },
    )?;
    if a.plan {
        print!("{}", engine::plan::describe(&plan, &prompts_hash)?);
        return Ok(());
    }
    stages.add("plan", started);
    let t = std::time::Instant::now();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("failed to create {}", a.out.display()))?;

    let mode = adt_metrics::Mode::parse(&a.fid_mode).with_context(|| {
        format!(
            "unknown --fid-mode `{}` (clean, pytorch-fid, tf-legacy)",
            a.fid_mode
        )
    })?;
    let mut net = Net::new(&a.inception, g.quiet);
    let opts = SetOptions {
        mode,
        batch: 32,
        skip_bad: false,
        num: prompts.len(),
        use_cache: true,
        quiet: g.quiet,
        device: crate::device::open(&a.device)?,
    };
    let real_stats = match &inputs.reference {
        Some(engine::inputs::Reference::Stats(p)) => {
            let s = fid::set_stats(&p.display().to_string(), &mut net, &opts)
                .with_context(|| format!("--fid-ref {}", p.display()))?;
            if s.gaussian.mu.len() != DIMS {
                return Err(crate::exit::DataError(format!(
                    "--fid-ref {} holds {}-dimensional statistics; FID's Inception pool features \
                     are {DIMS}-dimensional",
                    p.display(),
                    s.gaussian.mu.len()
                ))
                .into());
            }
            s
        }
        Some(engine::inputs::Reference::Images(_)) | None => {
            let data = inputs
                .eval
                .as_ref()
                .context("no FID reference: give --eval-data SOURCE or --fid-ref FILE.npz")?;
            let real_dir = a.out.join("real");
            sampling::write_images(&real_dir, &data.images, &data.captions)?;
            sampling::write_grid(&a.out.join("grids/real.png"), &data.images)?;
            let o = SetOptions {
                num: data.images.len(),
                ..opts.clone()
            };
            fid::set_stats(&real_dir.display().to_string(), &mut net, &o)?
        }
    };
    // Without reference features (statistics without `feats`), no KID and no intervals.
    let real_feats = real_stats.features.clone();
    // The real side's square-root factor, once for every cell (an eigensolve of Σ).
    let real_factor =
        adt_metrics::stats::SqrtFactor::new(&real_stats.gaussian.sigma, real_stats.gaussian.dim())?;
    // FID and KID (when the reference has features) of a set against the reference.
    let against_real = |s: &fid::SetStats| -> anyhow::Result<(f64, Option<f64>)> {
        let f =
            adt_metrics::stats::fid_with_factor(&real_stats.gaussian, &real_factor, &s.gaussian)?;
        let kid = match (&real_feats, &s.features) {
            (Some(r), Some(x)) => Some(adt_metrics::stats::kid(r, x, DIMS, 100, 1000, 0)?.kid),
            _ => None,
        };
        Ok((f.fid, kid))
    };
    // The independent encoder's distances, for the built-in data set it knows.
    let independent = match &inputs.eval {
        Some(d)
            if matches!(
                adt_datasets::DataSpec::parse(&d.source),
                Ok(adt_datasets::DataSpec::Shapes { .. })
            ) =>
        {
            Some(independent::Independent::new(&d.images)?)
        }
        _ => None,
    };
    // The floor: the second real set of the same captions against the first, at the same n
    // (metric, value), and its size.
    let mut floor: Vec<(&str, f64)> = Vec::new();
    let mut floor_n = 0;
    if let Some(fd) = &inputs.floor {
        let dir = a.out.join("real-floor");
        sampling::write_images(&dir, &fd.images, &fd.captions)?;
        sampling::write_grid(&a.out.join("grids/real-floor.png"), &fd.images)?;
        let o = SetOptions {
            num: fd.images.len(),
            ..opts.clone()
        };
        let (f, kid) = against_real(&fid::set_stats(&dir.display().to_string(), &mut net, &o)?)?;
        floor.push(("fid", f));
        floor.extend(kid.map(|k| ("kid", k)));
        if let Some(ind) = &independent {
            let (dist, k) = ind.distances(&fd.images)?;
            floor.extend([("shapes_fd", dist), ("shapes_kid", k)]);
        }
        floor_n = fd.images.len();
    }
    stages.add("reference", t);

    // The CLIP-based scores, loaded once for every cell (the union of the models' scores).
    let reps = config::bootstrap_reps(a);
    let mut wanted: Vec<String> = plan.models.iter().flat_map(|m| m.scores.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let scorers = if wanted.is_empty() {
        Vec::new()
    } else {
        let metrics = engine::scores::parse_metrics(&wanted.join(","))?;
        engine::scores::load_scorers(
            &metrics,
            &engine::scores::sources(&a.score_models),
            &opts.device,
            g.quiet,
        )?
    };
    let mut scored: Vec<intervals::ScoredCell> = Vec::new();

    let mut rows: Vec<MetricRow> = Vec::new();
    let mut evaluated: Vec<intervals::Evaluated> = Vec::new();
    // (label, tuning log) of every tuned state, for the loss curves.
    let mut tune_logs: Vec<(String, TuneLog)> = Vec::new();
    let mut norms: Vec<mechanism::GradNorm> = Vec::new();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    for mp in &plan.models {
        let model = &mp.name;
        let guidance = mp.guidance;
        for ts in &mp.train {
            norms.extend(mechanism::grad_norms(&reg, model, &mp.desc, ts)?);
        }
        hashes.insert(format!("{model}/base weights"), mp.base_hash.clone());
        for &seed in &plan.seeds {
            // (method, train sampler label, model spec, weights hash)
            let mut states: Vec<(Method, String, ModelSpec, String)> = Vec::new();
            for &method in &plan.methods {
                if method.tuned().is_none() {
                    states.push((method, "-".into(), mp.spec.clone(), mp.base_hash.clone()));
                    continue;
                }
                for ts in &mp.train {
                    let cell = engine::plan::tune_cell(&plan, mp, method, ts, seed)?;
                    let t = std::time::Instant::now();
                    let w = tuned(&reg, &cell, g.quiet)?;
                    stages.add("tune", t);
                    let dir = &cell.dir;
                    let wh = cell.weights_sha256()?;
                    hashes.insert(
                        format!("{model}/{method}/{ts}/seed {seed} weights"),
                        wh.clone(),
                    );
                    let log = TuneLog::read(dir)?;
                    // The training log beside the report.
                    let logs = a.out.join("logs");
                    std::fs::create_dir_all(&logs)?;
                    let stem = format!("{model}-{method}-{ts}-s{seed}").replace(':', "-");
                    for ext in ["csv", "parquet"] {
                        let from = dir.join(format!("log.{ext}"));
                        if from.exists() {
                            std::fs::copy(&from, logs.join(format!("{stem}.{ext}")))
                                .with_context(|| format!("cannot copy {}", from.display()))?;
                        }
                    }
                    let log_cell = MetricRow::cell(
                        model,
                        method.name(),
                        &ts.to_string(),
                        "-",
                        0,
                        guidance,
                        Some(seed),
                    );
                    for (name, v, n) in log.controls() {
                        rows.push(log_cell.at(name, v, n));
                    }
                    tune_logs.push((format!("{model} {method} {ts} seed {seed}"), log));
                    states.push((method, ts.to_string(), mp.spec.with_weights(&w), wh));
                }
            }
            for (method, ts, spec, wh) in &states {
                for es in mp.samplers_of(method.tuned().is_none(), seed, &plan) {
                    let cell =
                        engine::plan::sample_cell(&plan, mp, spec, wh, es, seed, &prompts_hash)?;
                    let t = std::time::Instant::now();
                    let dir = sampled(
                        &reg, &cell, spec, es, guidance, &prompts, plan.batch, seed, g.quiet,
                    )?;
                    stages.add("sample", t);
                    let t = std::time::Instant::now();
                    let images = load_folder(&dir)?;
                    let label = format!("{model}-{method}-{}-{es}-s{seed}", ts.replace(':', "-"))
                        .replace(':', "-");
                    sampling::write_grid(
                        &a.out.join("grids").join(format!("{label}.png")),
                        &images,
                    )?;
                    let s = fid::set_stats(&dir.display().to_string(), &mut net, &opts)?;
                    let (fid_value, kid) = against_real(&s)?;
                    let kid = kid.unwrap_or(f64::NAN);
                    let feats = s.features.context("no features")?;
                    stages.add("features", t);
                    let t = std::time::Instant::now();
                    let cell = MetricRow::cell(
                        model,
                        method.name(),
                        ts,
                        &es.to_string(),
                        es.steps,
                        guidance,
                        Some(seed),
                    );
                    for (name, v) in controls(&images, &prompts) {
                        rows.push(cell.at(name, v, images.len()));
                    }
                    if let Some(ind) = &independent {
                        let (fd, k) = ind.distances(&images)?;
                        rows.push(cell.at("shapes_fd", fd, images.len()));
                        rows.push(cell.at("shapes_kid", k, images.len()));
                    }
                    let mine: Vec<&adt_metrics::clip::Scorer> = scorers
                        .iter()
                        .filter(|s| mp.scores.iter().any(|m| m == s.metric().name()))
                        .collect();
                    if !mine.is_empty() {
                        let p = &prompts[..images.len().min(prompts.len())];
                        for sc in engine::scores::score_set(
                            mine,
                            &images,
                            Some(p),
                            16,
                            reps.max(1),
                            seed,
                            true,
                        )? {
                            let mut r = cell.at(sc.scores.metric, sc.scores.value, images.len());
                            if reps > 0 {
                                (r.ci_low, r.ci_high) = (Some(sc.ci95.0), Some(sc.ci95.1));
                            }
                            rows.push(r);
                            scored.push(intervals::ScoredCell {
                                cell: cell.clone(),
                                metric: sc.scores.metric.to_string(),
                                per_sample: sc.scores.per_sample,
                            });
                        }
                    }
                    stages.add("scores", t);
                    evaluated.push(intervals::Evaluated {
                        cell,
                        seed,
                        features: feats,
                        fid: fid_value,
                        kid,
                    });
                }
            }
        }
    }

    for mp in &plan.models {
        let cell = MetricRow::cell(&mp.name, "floor", "-", "real", 0, mp.guidance, None);
        rows.extend(floor.iter().map(|&(m, v)| cell.at(m, v, floor_n)));
    }
    // FID/KID with intervals, means over seeds, paired ADT − FT differences.
    let t = std::time::Instant::now();
    rows.extend(intervals::rows(
        real_feats.as_deref(),
        &evaluated,
        reps,
        g.quiet,
    )?);
    rows.extend(intervals::score_rows(&scored, reps)?);
    rows.extend(intervals::score_diff_rows(&scored, reps)?);
    rows.extend(intervals::seed_means_of_controls(&rows));
    rows.extend(intervals::power_rows(&rows)?);
    let references: Vec<(String, String)> = plan
        .models
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.reference.as_ref()?.to_string())))
        .collect();
    rows.extend(intervals::step_gap_rows(&rows, &references));

    stages.add("intervals", t);
    let t = std::time::Instant::now();
    // The frame.
    adt_reports::metrics::write(&rows, &a.out)?;
    // Every tune's training data, hashed (once per source).
    let mut train_data = BTreeMap::new();
    if plan.methods.iter().any(|m| m.tuned().is_some()) {
        for mp in &plan.models {
            if !train_data.contains_key(&mp.tune.data) {
                let sha = engine::inputs::source_sha256(&mp.tune.data)
                    .with_context(|| format!("hashing the training data {}", mp.tune.data))?;
                train_data.insert(mp.tune.data.clone(), sha);
            }
        }
    }
    config::save(a, config::resolved_tables(&plan)?, &a.out)?;
    let (_, inception_sha, _) = net.get()?;
    mechanism::write_csv(&norms, &a.out.join("grad_norms.csv"))?;
    let meta = report_meta(a, reps);
    let mut tables = adt_reports::render::tables(&rows, &meta);
    if !inputs.prompts.categories.is_empty() && !scored.is_empty() {
        let by_cat = categories::rows(&scored, &inputs.prompts.categories);
        categories::write(&by_cat, &a.out)?;
        tables.extend(categories::tables(&by_cat));
    }
    let md = adt_reports::render::markdown(TITLE, &meta, &tables);
    std::fs::write(a.out.join("report.md"), &md)?;
    let svgs = plots(&rows, &meta, &tune_logs, &norms)?;
    let figures = grid_figures(&a.out.join("grids"))?;
    let html = adt_reports::render::html(TITLE, &meta, &tables, &svgs, &figures);
    std::fs::write(a.out.join("report.html"), html)?;
    stages.add("report", t);
    let manifest = serde_json::json!({
        "adt_bench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "command": std::env::args().collect::<Vec<_>>(),
        "config": {
            "models": a.models, "methods": a.methods, "seeds": a.seeds, "num": a.num,
            "batch": a.batch, "device": a.device,
            "per_model": config::resolved_tables(&plan)?,
        },
        "fid": { "mode": mode.name(), "inception_sha256": inception_sha },
        "train_data": train_data,
        "inputs": inputs.manifest,
        "plugins": reg.loaded().iter().map(|p| serde_json::json!({
            "name": p.name, "kind": format!("{:?}", p.kind), "version": p.version, "abi": p.abi,
            "source": p.source.to_string(),
            "sha256": match &p.source {
                adt_plugin_host::PluginSource::Library(path) => file_sha256(path).ok(),
                adt_plugin_host::PluginSource::Builtin => None,
            },
        })).collect::<Vec<_>>(),
        "scores": scorers.iter().map(|sc| (sc.metric().name(), serde_json::json!({
            "files_sha256": sc.files(), "processor": sc.processor().describe(), "version": sc.version(),
        }))).collect::<BTreeMap<_, _>>(),
        "hashes": hashes,
        // What each model's plugin says of its weights (for hub models: the repo and the
        // commit of the snapshot used).
        "models": plan.models.iter().map(|m| (m.name.clone(), serde_json::json!({
            "weights_hash": m.base_hash, "plugin": m.desc.extra,
        }))).collect::<BTreeMap<_, _>>(),
        "machine": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH,
                     "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "seconds": started.elapsed().as_secs_f64(),
        "stage_seconds": stages.json(),
    });
    std::fs::write(
        a.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    if !g.quiet {
        print!("{md}");
    }
    eprintln!(
        "wrote {} ({:.0} s: {})",
        a.out.display(),
        started.elapsed().as_secs_f64(),
        stages.line()
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

const TITLE: &str = "adt-bench run";

/// The report's intro and method order.
pub fn report_meta(a: &RunArgs, reps: usize) -> adt_reports::render::Meta {
    let mode = match a.fid_mode.as_str() {
        "clean" => "clean-fid's `clean` mode (299×299 Inception input)".to_string(),
        other => format!("the `{other}` mode"),
    };
    let reference = match (&a.fid_ref, &a.eval_data, &a.prompts) {
        (Some(f), _, _) => format!("the reference statistics {}", f.display()),
        (None, Some(d), Some(_)) => format!("the images of {d}"),
        (None, Some(d), None) => format!("the images of {d}, whose captions are the prompts"),
        _ => "the real images of the same captions".to_string(),
    };
    adt_reports::render::Meta {
        intro: format!(
            "{} images per cell, seeds {:?}; FID and KID in {mode} against {reference}; 95 % \
             intervals from {reps} bootstrap replicates. With fewer than 2048 images the \
             covariance is rank-deficient: FID is biased upward and comparable only within this \
             report.",
            a.num, a.seeds
        ),
        methods: a.methods.clone(),
    }
}

/// The report's plots as (caption, SVG).
fn plots(
    rows: &[MetricRow],
    meta: &adt_reports::render::Meta,
    tune_logs: &[(String, TuneLog)],
    norms: &[mechanism::GradNorm],
) -> anyhow::Result<Vec<(String, String)>> {
    use adt_reports::render::{Plot, Series, svg_heatmap, svg_intervals, svg_lines};
    let mut out = Vec::new();
    let rank = |m: &str| {
        meta.methods
            .iter()
            .position(|x| x == m)
            .unwrap_or(usize::MAX)
    };
    let models: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    for model in &models {
        let over: Vec<&MetricRow> = rows
            .iter()
            .filter(|r| {
                &r.model == model
                    && r.seed.is_none()
                    && r.eval_sampler != "-"
                    && r.method != "few-step-gap"
            })
            .collect();
        let mut evals: Vec<String> = over.iter().map(|r| r.eval_sampler.clone()).collect();
        evals.sort();
        evals.dedup();
        // FID with intervals, grouped by eval sampler.
        let mut groups = Vec::new();
        for es in &evals {
            let mut e: Vec<&&MetricRow> = over
                .iter()
                .filter(|r| &r.eval_sampler == es && r.metric == "fid")
                .collect();
            e.sort_by_key(|r| (rank(&r.method), r.train_sampler.clone()));
            groups.push((
                es.clone(),
                e.iter()
                    .map(|r| {
                        let l = if r.train_sampler == "-" {
                            r.method.clone()
                        } else {
                            format!("{} ({})", r.method, r.train_sampler)
                        };
                        (l, r.value, r.ci_low, r.ci_high)
                    })
                    .collect(),
            ));
        }
        out.push((
            format!("{model}: FID per method and eval sampler, mean over seeds with its 95 % interval (a dot-and-whisker plot: the axis does not start at 0)."),
            svg_intervals(&format!("{model}: FID (95 % interval)"), "FID", &groups),
        ));
        // Paired differences.
        let mut dgroups = Vec::new();
        for es in &evals {
            let e: Vec<(String, f64, Option<f64>, Option<f64>)> = over
                .iter()
                .filter(|r| &r.eval_sampler == es && r.metric == "fid_diff")
                .map(|r| {
                    (
                        format!("adt − ft ({})", r.train_sampler),
                        r.value,
                        r.ci_low,
                        r.ci_high,
                    )
                })
                .collect();
            if !e.is_empty() {
                dgroups.push((es.clone(), e));
            }
        }
        if !dgroups.is_empty() {
            out.push((
                format!("{model}: paired FID difference ADT − FT with its 95 % interval; below 0 = ADT better."),
                svg_intervals(&format!("{model}: ΔFID ADT − FT"), "ΔFID", &dgroups),
            ));
        }
        // Transfer heatmap.
        let mut states: Vec<(usize, String, String)> = over
            .iter()
            .filter(|r| r.metric == "fid")
            .map(|r| (rank(&r.method), r.method.clone(), r.train_sampler.clone()))
            .collect();
        states.sort();
        states.dedup();
        let labels: Vec<String> = states
            .iter()
            .map(|s| format!("{} / tuned with {}", s.1, s.2))
            .collect();
        let values: Vec<Vec<Option<f64>>> = states
            .iter()
            .map(|(_, me, ts)| {
                evals
                    .iter()
                    .map(|es| {
                        over.iter()
                            .find(|r| {
                                r.metric == "fid"
                                    && &r.method == me
                                    && &r.train_sampler == ts
                                    && &r.eval_sampler == es
                            })
                            .map(|r| r.value)
                    })
                    .collect()
            })
            .collect();
        out.push((
            format!("{model}: the transfer matrix — FID of each tuned state (row) under each eval sampler (column); the colours span this table's range (lowest green, highest red), so read the intervals above before the colours."),
            svg_heatmap(&format!("{model}: transfer matrix (FID)"), &labels, &evals, &values),
        ));
    }
    // Loss curves.
    for (col, title, log_y) in [
        ("loss_diff", "L_diff (diffusion loss, model updates)", false),
        ("loss_d", "discriminator loss L_D", false),
        ("loss_adv", "adversarial loss L_adv", false),
        ("disc_gap", "discriminator gap (real − generated)", false),
        ("color_mean_error", "colour-mean error of x̂0", false),
    ] {
        let mut series = Vec::new();
        for (label, log) in tune_logs {
            let pts = log.curve(col);
            if !pts.is_empty() {
                series.push(Series {
                    label: label.clone(),
                    points: pts,
                    dashed: false,
                });
            }
        }
        if series.is_empty() {
            continue;
        }
        out.push((
            format!("Tuning log: {title}, moving mean over 9 logged values."),
            svg_lines(&Plot {
                title: title.into(),
                x_label: "iteration".into(),
                y_label: col.into(),
                series,
                log_y,
                caption: String::new(),
            }),
        ));
    }
    // The gradient reaching each step.
    let mut keys: Vec<(String, String)> = norms
        .iter()
        .map(|n| (n.model.clone(), n.sampler.clone()))
        .collect();
    keys.dedup();
    for (model, sampler) in keys {
        let mut series = Vec::new();
        use adt_plugin_api::Parameterization as P;
        use adt_tuner::paths::GradPath;
        for param in [P::V, P::Eps, P::Flow] {
            for path in [GradPath::Adt, GradPath::Drtune] {
                let pts: Vec<(f64, f64)> = norms
                    .iter()
                    .filter(|n| {
                        n.model == model
                            && n.sampler == sampler
                            && n.parameterization == param
                            && n.path == path
                    })
                    .map(|n| (n.step as f64, n.norm))
                    .collect();
                if !pts.is_empty() {
                    series.push(Series {
                        label: format!(
                            "{}, {}-pred.",
                            mechanism::name(&path),
                            mechanism::name(&param)
                        ),
                        points: pts,
                        dashed: path == GradPath::Adt,
                    });
                }
            }
        }
        let eps: Vec<(f64, f64)> = norms
            .iter()
            .filter(|n| {
                n.model == model
                    && n.sampler == sampler
                    && n.parameterization == P::Eps
                    && n.path == GradPath::Adt
            })
            .map(|n| (n.step as f64, 1.0 / n.alpha_bar.sqrt()))
            .collect();
        if !eps.is_empty() {
            series.push(Series {
                label: "1/√ᾱ_t".into(),
                points: eps,
                dashed: true,
            });
        }
        out.push((
            format!(
                "{model}, {sampler}: norm of the gradient reaching each step (0 = noisiest) for a unit gradient on the final image, \
                 from the tuner's adjoint on the sampler's plan (grad_norms.csv). ADT: equal at every step. DRTune: the product \
                 of the state coefficients — 1/√ᾱ_t for ε-prediction; ≈ 1 for v-prediction, whose DDIM state coefficients are cosines."
            ),
            svg_lines(&Plot {
                title: format!("{model}, {sampler}: gradient norm per step"),
                x_label: "step index".into(),
                y_label: "‖∂L/∂x_t‖".into(),
                series,
                log_y: true,
                caption: String::new(),
            }),
        ));
    }
    Ok(out)
}

/// The sample grids of a run's `grids/` folder, real images first.
fn grid_figures(dir: &Path) -> anyhow::Result<Vec<adt_reports::render::Figure>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort_by_key(|p| (p.file_stem().is_none_or(|s| s != "real"), p.clone()));
    files
        .iter()
        .map(|p| {
            Ok(adt_reports::render::Figure {
                caption: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                png: std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        method: &str,
        ts: &str,
        es: &str,
        seed: Option<u64>,
        metric: &str,
        value: f64,
    ) -> MetricRow {
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
        for seed in [Some(0), Some(1), None] {
            let s = seed.map_or(0.5, |s| s as f64);
            for (method, ts, base) in [
                ("base", "-", 220.0),
                ("ft", "ddim:10", 221.0),
                ("adt", "ddim:10", 215.0),
            ] {
                for (es, off) in [("ddim:10", 0.0), ("dpm++2m:10", 1.5)] {
                    let cell = |m: &str, v: f64| row(method, ts, es, seed, m, v);
                    let ci = |mut r: MetricRow, w: f64| {
                        r.ci_low = Some(r.value - w);
                        r.ci_high = Some(r.value + 1.5 * w);
                        r
                    };
                    rows.push(ci(cell("fid", base + off + s), 4.0));
                    rows.push(ci(cell("kid", (base + off + s) / 1500.0), 0.002));
                    if method == "adt" {
                        let d = |m: &str, v: f64, w: f64| ci(row("adt-ft", ts, es, seed, m, v), w);
                        rows.push(d("fid_diff", -6.5 + off + s, 3.0));
                        rows.push(d("kid_diff", -0.004, 0.002));
                    }
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
        let args = match crate::parse_args([
            "adt-bench",
            "run",
            "--seeds",
            "0,1",
            "-n",
            "64",
            "--train-samplers",
            "ddim:10",
            "--eval-samplers",
            "ddim:10,dpm++2m:10",
        ])
        .map(|a| a.cmd)
        {
            Ok(crate::cli::Command::Run(r)) => r,
            _ => unreachable!("the run command line parses"),
        };
        let floor = MetricRow::cell("tiny", "floor", "-", "real", 0, 2.0, None);
        rows.push(floor.at("fid", 44.0, 64));
        rows.push(floor.at("kid", 0.0012, 64));
        rows.extend(intervals::power_rows(&rows).unwrap());
        // The base model at the many-step reference (first seed), and its few-step gap.
        let reference = MetricRow::cell("tiny", "base", "-", "ddim:50", 50, 2.0, Some(0));
        rows.push(reference.at("fid", 150.0, 64));
        rows.push(reference.at("kid", 0.1, 64));
        rows.extend(intervals::step_gap_rows(
            &rows,
            &[("tiny".into(), "ddim:50".into())],
        ));
        let meta = report_meta(&args, 1000);
        let tables = adt_reports::render::tables(&rows, &meta);
        insta::assert_snapshot!(adt_reports::render::markdown(TITLE, &meta, &tables));
    }
}
