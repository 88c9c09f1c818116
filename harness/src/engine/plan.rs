//! The run plan: flags, the `--config` file and the plugins' descriptions resolved once into
//! typed per-model settings, every incompatibility refused before any work, and the grid of
//! cells with their cache state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adt_plugin_api::{ModelDescription, NoiseSchedule};
use adt_plugin_host::{Kind, Registry, Samplers};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::settings::{DeviceSpec, Method, ModelSpec, Start, TuneSettings, settings_key};
use crate::sampling::SamplerSpec;

/// The settings one model of a run may have (a `[models.NAME]` table, or `--set NAME.KEY=V`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTable {
    /// Weights: a path, a Hugging Face repo id (default: the plugin's own).
    pub weights: Option<String>,
    /// Discriminator backbone (`shapes`, `dinov2:SOURCE`).
    pub backbone: Option<String>,
    /// Compute dtype (`f32`, `f16`, `bf16`).
    pub dtype: Option<String>,
    /// LoRA rank of the trained adapters (none: every weight is trained).
    pub lora_rank: Option<usize>,
    /// Weight-file variant (`fp16`).
    pub variant: Option<String>,
    /// Square image side in pixels (sets height and width).
    pub resolution: Option<usize>,
    /// Image height in pixels.
    pub height: Option<usize>,
    /// Image width in pixels.
    pub width: Option<usize>,
    /// Guidance of the evaluation (default: the model's).
    pub guidance: Option<f32>,
    /// Samplers the tunes roll out.
    pub train_samplers: Option<Vec<SamplerSpec>>,
    /// Samplers the evaluation uses.
    pub eval_samplers: Option<Vec<SamplerSpec>>,
    /// Tune settings of this model (keys as in `[tune]`).
    pub tune: Option<serde_json::Map<String, serde_json::Value>>,
    /// Quality and preference scores of this model's cells (default: the run's `scores`).
    pub scores: Option<Vec<String>>,
}

/// One model of the plan, every setting resolved.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// The model's name in the run (its plugin).
    pub name: String,
    /// How the base model is loaded.
    pub spec: ModelSpec,
    /// What the plugin says of it.
    pub desc: ModelDescription,
    /// Content hash of the base weights.
    pub base_hash: String,
    /// Guidance of the evaluation.
    pub guidance: f32,
    /// Samplers the tunes roll out.
    pub train: Vec<SamplerSpec>,
    /// Samplers the evaluation uses.
    pub eval: Vec<SamplerSpec>,
    /// The many-step sampler the base model is also evaluated with (first seed only): the
    /// few-step gap, base at each eval sampler minus base at this one, is the room a tune
    /// can close. `None`: no reference.
    pub reference: Option<SamplerSpec>,
    /// The tunes' settings (backbone resolved).
    pub tune: TuneSettings,
    /// The CLIP-based scores of its cells (metric names).
    pub scores: Vec<String>,
}

impl ModelPlan {
    /// The samplers a state is evaluated with on `seed`: the eval samplers, and for the base
    /// model (`base`) on the plan's first seed also the reference, unless it is one of them.
    pub fn samplers_of<'a>(
        &'a self,
        base: bool,
        seed: u64,
        plan: &RunPlan,
    ) -> impl Iterator<Item = &'a SamplerSpec> {
        let first = plan.seeds.first() == Some(&seed);
        let reference = self
            .reference
            .as_ref()
            .filter(|r| base && first && !self.eval.contains(r));
        self.eval.iter().chain(reference)
    }
}

/// The whole grid.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The models.
    pub models: Vec<ModelPlan>,
    /// The methods.
    pub methods: Vec<Method>,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Images per cell.
    pub num: usize,
    /// Images per model call.
    pub batch: usize,
    /// Output folder (its `cache/` holds tuned models and samples).
    pub out: PathBuf,
}

/// What the plan is built from besides the plugins.
pub struct PlanInput<'a> {
    /// Model names, in order.
    pub models: &'a [String],
    /// Methods.
    pub methods: &'a [Method],
    /// Seeds.
    pub seeds: &'a [u64],
    /// Images per cell and per call.
    pub num: usize,
    /// Images per model call.
    pub batch: usize,
    /// Device of every model.
    pub device: DeviceSpec,
    /// Guidance of every model's evaluation (else per model, else the model's default).
    pub guidance: Option<f32>,
    /// Samplers every model uses unless its table says otherwise; `None`: per model, the
    /// run's defaults adapted to its schedule.
    pub train_samplers: Option<&'a [SamplerSpec]>,
    /// As `train_samplers`, for the evaluation.
    pub eval_samplers: Option<&'a [SamplerSpec]>,
    /// The base model's many-step reference sampler: `Some(None)` none, `Some(Some(s))` `s`
    /// for every model, `None` [`DEFAULT_REFERENCE`] adapted to each model's schedule.
    pub reference: Option<Option<&'a SamplerSpec>>,
    /// The tune settings every model starts from (defaults, `[tune]`, `--tune-args`).
    pub tune: TuneSettings,
    /// Per-model tables.
    pub tables: &'a BTreeMap<String, ModelTable>,
    /// The scores of every model unless its table says otherwise.
    pub scores: &'a [String],
    /// Output folder.
    pub out: &'a Path,
}

/// The run's default samplers: 4-step DDIM rollouts, evaluated with 4-step DDIM and
/// DPM++(2M) (the embedded default's few-step regime).
pub const DEFAULT_TRAIN: &[&str] = &["ddim:4"];
/// See [`DEFAULT_TRAIN`].
pub const DEFAULT_EVAL: &[&str] = &["ddim:4", "dpm++2m:4"];
/// The base model's many-step reference: 50 DDIM steps (or the first sampler of the model's
/// schedule kind at 50 steps).
pub const DEFAULT_REFERENCE: &str = "ddim:50";

/// The tune settings of `run`'s embedded default: 20 discriminator-only iterations, then 25
/// model updates of 8 examples, rollouts of the train sampler from its first two indices,
/// λ = 5 (docs/tuning-experiments.md: the few-step regime is where ADT beat FT on this model,
/// and λ 1 let the generator add background noise). Sized with `-n 48` so that the whole
/// default (3 seeds) fits 10 minutes on 2 cores.
pub fn run_default_tune() -> TuneSettings {
    TuneSettings {
        iters: 70,
        d_warmup: 20,
        h: 2,
        batch: 8,
        k: 2,
        lr: 3e-5,
        lambda: 5.0,
        start: Start(adt_tuner::adt::StartDist::Range(0, 1)),
        disc_loss: adt_tuner::disc::DiscLoss::NonSaturating,
        ..TuneSettings::tune_defaults()
    }
}

/// The schedule kind a sampler lists (`discrete`, `flow`).
pub fn schedule_kind(s: &NoiseSchedule) -> &'static str {
    match s {
        NoiseSchedule::Discrete { .. } => "discrete",
        NoiseSchedule::Flow { .. } => "flow",
    }
}

/// Every sampler the registry offers: (name, schedule kinds).
pub fn all_samplers(reg: &Registry) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    for p in reg.of_kind(Kind::Sampler) {
        for s in Samplers::new(p)?.list()? {
            out.push((s.name, s.schedules));
        }
    }
    Ok(out)
}

/// Check that `model` can use each sampler (the sampler exists and plans for its schedule);
/// the error names the model, the sampler, why, and the samplers that fit.
fn check_samplers(
    reg: &Registry,
    model: &str,
    desc: &ModelDescription,
    which: &str,
    specs: &[SamplerSpec],
) -> anyhow::Result<()> {
    let kind = schedule_kind(&desc.schedule);
    for spec in specs {
        if let Err(e) = crate::sampling::plan(reg, desc, spec, None, None) {
            // Only now every sampler library is opened, to list the ones that fit.
            let fits: Vec<String> = all_samplers(reg)?
                .into_iter()
                .filter(|(_, k)| k.iter().any(|k| k == kind))
                .map(|(n, _)| n)
                .collect();
            bail!(
                "model `{model}` cannot use the {which} sampler `{spec}`: {e:#}. Samplers for its \
                 {kind} schedule: {}",
                fits.join(", ")
            );
        }
    }
    Ok(())
}

/// A default sampler adapted to a model: `default` when it plans for the model's schedule,
/// else the first listed sampler for that schedule with the same steps.
pub fn default_sampler(
    reg: &Registry,
    desc: &ModelDescription,
    default: &str,
) -> anyhow::Result<SamplerSpec> {
    Ok(adapt(reg, desc, &[default])?.remove(0))
}

/// The run's default samplers for a model: each default that plans for the model's schedule,
/// else the first listed sampler for that schedule with the same steps.
fn adapt(
    reg: &Registry,
    desc: &ModelDescription,
    defaults: &[&str],
) -> anyhow::Result<Vec<SamplerSpec>> {
    let kind = schedule_kind(&desc.schedule);
    // The first sampler for the model's schedule, listed (every sampler library opened) only
    // when a default needs replacing, and then once.
    let mut first: Option<Option<String>> = None;
    let mut out: Vec<SamplerSpec> = Vec::new();
    for d in defaults {
        let spec: SamplerSpec = d.parse()?;
        let spec = if crate::sampling::plan(reg, desc, &spec, None, None).is_ok() {
            spec
        } else {
            if first.is_none() {
                first = Some(
                    all_samplers(reg)?
                        .into_iter()
                        .find(|(_, k)| k.iter().any(|k| k == kind))
                        .map(|(n, _)| n),
                );
            }
            match first.as_ref().and_then(Option::as_ref) {
                Some(name) => SamplerSpec {
                    name: name.clone(),
                    steps: spec.steps,
                },
                None => bail!(
                    "no sampler plugin plans for a {kind} schedule (model `{}`); see `adt-bench plugins list`",
                    desc.name
                ),
            }
        };
        if !out.contains(&spec) {
            out.push(spec);
        }
    }
    Ok(out)
}

/// Resolve the plan: open every model (weights found or their absence explained), pick and
/// check its samplers, merge its tune settings and resolve its backbone.
pub fn build(reg: &Registry, p: &PlanInput<'_>) -> anyhow::Result<RunPlan> {
    if p.models.is_empty() || p.seeds.is_empty() || p.methods.is_empty() {
        bail!("--models, --methods and --seeds must each name at least one");
    }
    if p.num < 2 {
        bail!("-n must be at least 2 (FID needs two images per set)");
    }
    for name in p.tables.keys() {
        if !p.models.iter().any(|m| m == name) {
            bail!(
                "settings for model `{name}`, which is not in the run's models ({})",
                p.models.join(",")
            );
        }
    }
    let tuned = p.methods.iter().any(|m| *m != Method::Base);
    let mut models = Vec::new();
    for name in p.models {
        let t = p.tables.get(name).cloned().unwrap_or_default();
        let (height, width) = match (t.resolution, t.height, t.width) {
            (Some(r), None, None) => (Some(r), Some(r)),
            (None, h, w) => (h, w),
            _ => bail!("model `{name}`: give resolution, or height and width, not both"),
        };
        let spec = ModelSpec {
            plugin: name.clone(),
            weights: t.weights.clone(),
            device: p.device,
            init_seed: 0,
            dtype: t.dtype.clone(),
            lora_rank: t.lora_rank,
            variant: t.variant.clone(),
            height,
            width,
        };
        let desc = spec
            .open(reg)
            .and_then(|m| Ok(m.describe()?))
            .with_context(|| format!("model `{name}`"))?;
        if tuned && !desc.trains {
            let methods: Vec<&str> = p
                .methods
                .iter()
                .filter(|m| m.tuned().is_some())
                .map(|m| m.name())
                .collect();
            bail!(
                "model `{name}` is an inference-only plugin: it does not implement {}, which \
                 {} need. Evaluate it untuned with --methods base",
                adt_plugin_api::TRAINING_CALLS.join(", "),
                methods.join(", ")
            );
        }
        let base_hash = desc.weights_hash.clone().unwrap_or_else(|| "none".into());
        let train = match (&t.train_samplers, p.train_samplers) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v.to_vec(),
            (None, None) => adapt(reg, &desc, DEFAULT_TRAIN)?,
        };
        let eval = match (&t.eval_samplers, p.eval_samplers) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v.to_vec(),
            (None, None) => adapt(reg, &desc, DEFAULT_EVAL)?,
        };
        if eval.is_empty() || (tuned && train.is_empty()) {
            bail!("model `{name}`: no train or eval sampler");
        }
        check_samplers(reg, name, &desc, "train", &train)?;
        check_samplers(reg, name, &desc, "eval", &eval)?;
        let reference = match p.reference {
            Some(Some(s)) => {
                check_samplers(reg, name, &desc, "reference", std::slice::from_ref(s))?;
                Some(s.clone())
            }
            Some(None) => None,
            None => adapt(reg, &desc, &[DEFAULT_REFERENCE])?.into_iter().next(),
        };
        // Only the base model is sampled with it.
        let reference = reference.filter(|_| p.methods.contains(&Method::Base));
        let mut tune = match &t.tune {
            Some(tab) => p
                .tune
                .overlay(tab)
                .with_context(|| format!("[models.{name}.tune]"))?,
            None => p.tune.clone(),
        };
        if t.backbone.is_some() {
            tune.backbone = t.backbone.clone();
        }
        if p.methods.contains(&Method::Adt) {
            let b = tune
                .backbone
                .clone()
                .unwrap_or_else(|| super::backbone::default_for(name));
            // A DINOv2 from a repo id is found (or fetched) now, before any work, and the
            // cache key holds where it is.
            tune.backbone = Some(if b.starts_with("dinov2:") {
                let path = super::backbone::resolve(&b)
                    .with_context(|| format!("model `{name}`: the discriminator backbone"))?;
                format!("dinov2:{}", path.display())
            } else {
                b
            });
        }
        let guidance = t.guidance.or(p.guidance).unwrap_or(desc.default_guidance);
        // The rollouts use the evaluation's guidance unless the tune settings name one: the
        // model is tuned as it is sampled.
        tune.guidance.get_or_insert(guidance);
        let scores = t.scores.clone().unwrap_or_else(|| p.scores.to_vec());
        let scores: Vec<String> = if scores.is_empty() {
            Vec::new()
        } else {
            super::scores::parse_metrics(&scores.join(","))
                .with_context(|| format!("model `{name}`: scores"))?
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        };
        models.push(ModelPlan {
            name: name.clone(),
            spec,
            desc,
            base_hash,
            guidance,
            train,
            eval,
            reference,
            tune,
            scores,
        });
    }
    Ok(RunPlan {
        models,
        methods: p.methods.to_vec(),
        seeds: p.seeds.to_vec(),
        num: p.num,
        batch: p.batch,
        out: p.out.to_path_buf(),
    })
}

/// Where a cell lives: `OUT/cache/KIND/LABEL-KEY`.
fn entry(out: &Path, kind: &str, label: &str, key: &str) -> PathBuf {
    out.join("cache")
        .join(kind)
        .join(format!("{}-{key}", label.replace(':', "-")))
}

/// A tune cell of the plan.
#[derive(Debug, Clone)]
pub struct TuneCell {
    /// The job.
    pub job: super::cells::TuneJob,
    /// Its cache folder.
    pub dir: PathBuf,
    /// The settings the key hashes (saved in `done.json`).
    pub keyed: serde_json::Value,
}

impl TuneCell {
    /// What its evaluation samples from, passed to the plugin as `weights`: the checkpoint's
    /// moving average when the settings keep one (`ema.safetensors`), else the checkpoint's
    /// `model.safetensors` when the plugin writes one, else the folder `save_state` wrote
    /// (a plugin's own format; a plugin loads its own checkpoint folder as weights).
    pub fn weights(&self) -> PathBuf {
        let dir = self.dir.join("checkpoint/model");
        if self.job.settings.ema.is_some() {
            return dir.join("ema.safetensors");
        }
        let file = dir.join("model.safetensors");
        if file.is_file() || !dir.is_dir() {
            file
        } else {
            dir
        }
    }

    /// The SHA-256 of [`TuneCell::weights`]: of the file, or of a folder's files (names and
    /// contents, in name order).
    pub fn weights_sha256(&self) -> anyhow::Result<String> {
        let w = self.weights();
        tree_sha256(&w).with_context(|| format!("cannot read {}", w.display()))
    }

    /// Done (finished and checkpointed), partial (a checkpoint to resume), or to do.
    pub fn state(&self) -> CellState {
        if self.dir.join("done.json").is_file() && self.weights().exists() {
            CellState::Done
        } else if checkpoint_state(&self.dir).is_some() {
            CellState::Partial
        } else {
            CellState::ToDo
        }
    }
}

/// How far a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Finished.
    Done,
    /// Interrupted; resumes.
    Partial,
    /// Not started.
    ToDo,
}

impl std::fmt::Display for CellState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CellState::Done => "done",
            CellState::Partial => "partial",
            CellState::ToDo => "to do",
        })
    }
}

/// The tune cell of (model, method, train sampler, seed).
pub fn tune_cell(
    plan: &RunPlan,
    m: &ModelPlan,
    method: Method,
    sampler: &SamplerSpec,
    seed: u64,
) -> anyhow::Result<TuneCell> {
    let tuned = method
        .tuned()
        .with_context(|| format!("`{}` is not tuned", method.name()))?;
    let job = super::cells::TuneJob {
        model: m.spec.clone(),
        method: tuned,
        sampler: sampler.clone(),
        seed,
        settings: method.settings(&m.tune),
    };
    let keyed = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "base_weights_hash": m.base_hash,
        "job": job,
    });
    let label = format!("{}-{}-{sampler}-s{seed}", m.name, method.name());
    let dir = entry(&plan.out, "tune", &label, &settings_key(&keyed)?);
    Ok(TuneCell { job, dir, keyed })
}

/// A sample cell: the folder of one model state's images with one sampler.
#[derive(Debug, Clone)]
pub struct SampleCell {
    /// Its cache folder.
    pub dir: PathBuf,
    /// The settings the key hashes.
    pub keyed: serde_json::Value,
}

impl SampleCell {
    /// Done or to do.
    pub fn state(&self) -> CellState {
        if self.dir.join("sample.json").is_file() {
            CellState::Done
        } else {
            CellState::ToDo
        }
    }
}

/// The sample cell of a model state (its spec and weights hash) under one eval sampler.
#[allow(clippy::too_many_arguments)]
pub fn sample_cell(
    plan: &RunPlan,
    m: &ModelPlan,
    spec: &ModelSpec,
    weights_hash: &str,
    sampler: &SamplerSpec,
    seed: u64,
    prompts_hash: &str,
) -> anyhow::Result<SampleCell> {
    let keyed = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": spec,
        "weights_hash": weights_hash,
        "sampler": sampler,
        "guidance": m.guidance,
        "seed": seed,
        "n": plan.num,
        "prompts_sha256": prompts_hash,
    });
    let label = format!("{}-{sampler}-s{seed}", m.name);
    let dir = entry(&plan.out, "samples", &label, &settings_key(&keyed)?);
    Ok(SampleCell { dir, keyed })
}

/// Print the plan: per model its resolved settings, then every cell with its cache state and
/// the work left.
pub fn describe(plan: &RunPlan, prompts_hash: &str) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    let (mut tunes_left, mut iters_left, mut sets_left) = (0usize, 0u64, 0usize);
    for m in &plan.models {
        writeln!(
            s,
            "model {} ({}, {}-prediction, {} schedule, image {}×{}){}",
            m.name,
            m.desc.family,
            serde_json::to_value(m.desc.parameterization)?
                .as_str()
                .unwrap_or("?"),
            schedule_kind(&m.desc.schedule),
            m.desc.image_shape[1],
            m.desc.image_shape[2],
            match &m.spec.weights {
                Some(w) => format!(", weights {w}"),
                None => String::new(),
            }
        )?;
        let opts: Vec<String> = [
            m.spec.dtype.as_ref().map(|v| format!("dtype {v}")),
            m.spec.lora_rank.map(|v| format!("LoRA rank {v}")),
            m.spec.variant.as_ref().map(|v| format!("variant {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !opts.is_empty() {
            writeln!(s, "  {}", opts.join(", "))?;
        }
        let list = |v: &[SamplerSpec]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            s,
            "  guidance {}; train samplers {}; eval samplers {}{}{}",
            m.guidance,
            list(&m.train),
            list(&m.eval),
            m.reference.as_ref().map_or_else(String::new, |r| format!(
                "; reference {r} (base, seed {}: the few-step gap)",
                plan.seeds[0]
            )),
            if m.scores.is_empty() {
                String::new()
            } else {
                format!("; scores {}", m.scores.join(", "))
            }
        )?;
        let t = &m.tune;
        writeln!(
            s,
            "  tune: {} iterations of {} on {}, λ {}, H {}, K {}, lr {}, start {}, backbone {}",
            t.iters,
            t.batch,
            t.data,
            t.lambda,
            t.h,
            t.k,
            t.lr,
            t.start,
            t.backbone.as_deref().unwrap_or("-")
        )?;
        writeln!(
            s,
            "  rollout guidance {}; caption dropout {}; discriminator: {} learning rate, {} \
             step(s) per iteration, sees {} images; evaluated: {}",
            t.guidance
                .map_or_else(|| "(the model's)".to_string(), |g| g.to_string()),
            t.caption_dropout,
            super::settings::to_name(&t.d_schedule),
            t.d_steps,
            super::settings::to_name(&t.d_input),
            t.ema.map_or_else(
                || "the last weights".to_string(),
                |d| format!("the moving average of the weights (decay {d})")
            ),
        )?;
        for &seed in &plan.seeds {
            for method in &plan.methods {
                match method.tuned() {
                    None => {
                        for es in m.samplers_of(true, seed, plan) {
                            let c = sample_cell(
                                plan,
                                m,
                                &m.spec,
                                &m.base_hash,
                                es,
                                seed,
                                prompts_hash,
                            )?;
                            let st = c.state();
                            if st != CellState::Done {
                                sets_left += 1;
                            }
                            writeln!(
                                s,
                                "  {:<8} base  {:<14} seed {seed}: {st}",
                                "sample",
                                es.to_string()
                            )?;
                        }
                    }
                    Some(_) => {
                        for ts in &m.train {
                            let c = tune_cell(plan, m, *method, ts, seed)?;
                            let st = c.state();
                            let done_iters = match st {
                                CellState::Done => t.iters,
                                CellState::Partial => read_iter(&c.dir).unwrap_or(0),
                                CellState::ToDo => 0,
                            };
                            if st != CellState::Done {
                                tunes_left += 1;
                                iters_left += t.iters.saturating_sub(done_iters);
                            }
                            writeln!(
                                s,
                                "  {:<8} {:<5} {:<14} seed {seed}: {st}{}",
                                "tune",
                                method.name(),
                                ts.to_string(),
                                if st == CellState::Partial {
                                    format!(" ({done_iters}/{} iterations)", t.iters)
                                } else {
                                    String::new()
                                }
                            )?;
                            // The checkpoint's hash once per tune, not per eval sampler.
                            let tuned = if st == CellState::Done {
                                let wh = c.weights_sha256()?;
                                Some((m.spec.with_weights(&c.weights()), wh))
                            } else {
                                None
                            };
                            for es in &m.eval {
                                let st = match &tuned {
                                    Some((spec, wh)) => {
                                        sample_cell(plan, m, spec, wh, es, seed, prompts_hash)?
                                            .state()
                                    }
                                    None => CellState::ToDo,
                                };
                                if st != CellState::Done {
                                    sets_left += 1;
                                }
                                writeln!(
                                    s,
                                    "  {:<8} {:<5} {:<14} seed {seed}: {st} (tuned with {ts})",
                                    "sample",
                                    method.name(),
                                    es.to_string()
                                )?;
                            }
                        }
                    }
                }
            }
        }
    }
    writeln!(
        s,
        "work left: {tunes_left} tune(s), {iters_left} iteration(s); {sets_left} sample set(s) of {} images",
        plan.num
    )?;
    Ok(s)
}

/// A tune folder's checkpoint state (`checkpoint/state.json`, or `checkpoint.old/` after a
/// crash between its two renames).
fn checkpoint_state(dir: &Path) -> Option<PathBuf> {
    ["checkpoint", "checkpoint.old"]
        .iter()
        .map(|c| dir.join(c).join("state.json"))
        .find(|p| p.is_file())
}

/// The iteration a partial tune reached.
fn read_iter(dir: &Path) -> Option<u64> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint_state(dir)?).ok()?).ok()?;
    v.get("iter").and_then(|x| x.as_u64())
}

/// SHA-256 of a file, or of a folder as the sorted list of its files' relative names and
/// SHA-256s (temporary files, named with a leading dot, left out).
pub fn tree_sha256(p: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    if !p.is_dir() {
        return adt_plugin_kit::sha256_file(p);
    }
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut Vec<(String, String)>,
    ) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((
                    rel.to_string_lossy().into_owned(),
                    adt_plugin_kit::sha256_file(&path)?,
                ));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(p, p, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for (name, sha) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(sha.as_bytes());
        h.update([b'\n']);
    }
    Ok(format!("{:x}", h.finalize()))
}
