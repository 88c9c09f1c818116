//! The tune and sample stages on typed settings: one tuned model state, one folder of samples.
//! `tune` and `sample` call these with what their flags resolve to; `run` calls them for every
//! cell of its plan (through the cache in [`crate::engine::cache`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adt_plugin_api::{HostTensor, Spacing};
use adt_plugin_host::Registry;
use adt_tuner::adt::{Method as Tuned, TuneConfig, Tuner, shapes_discriminator, tune};
use adt_tuner::disc::DiscConfig;
use anyhow::{Context, bail};

use super::settings::{ModelSpec, TuneSettings};
use crate::sampling::{self, SamplerSpec};

/// One tune: a model, a method, the rollouts' sampler, a seed, and the settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneJob {
    /// The model to tune.
    pub model: ModelSpec,
    /// `adt` or `ft`.
    pub method: Tuned,
    /// The rollouts' sampler.
    pub sampler: SamplerSpec,
    /// Seed of everything random.
    pub seed: u64,
    /// Everything else.
    pub settings: TuneSettings,
}

/// `adt` or `ft`.
pub fn method_name(m: Tuned) -> &'static str {
    match m {
        Tuned::Adt => "adt",
        Tuned::Ft => "ft",
    }
}

impl TuneJob {
    /// The `adt-bench tune` command line that runs this job into `out`.
    pub fn command(&self, out: &Path) -> Vec<String> {
        let mut v = vec!["adt-bench".to_string(), "tune".into()];
        v.extend(self.model.argv());
        v.extend([
            "--method".into(),
            method_name(self.method).into(),
            "--sampler".into(),
            self.sampler.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ]);
        v.extend(self.settings.argv());
        v.extend(["--out".into(), out.display().to_string()]);
        v
    }
}

/// Run (or resume, when `out` holds a checkpoint) a tune; returns the log rows.
pub fn tune_model(
    reg: &Registry,
    job: &TuneJob,
    out: &Path,
    stop_after: Option<u64>,
    reset_optimizer: bool,
    quiet: bool,
) -> anyhow::Result<Vec<adt_tuner::adt::LogRow>> {
    let s = &job.settings;
    s.check()?;
    let mut model = job.model.open(reg)?;
    let desc = model.describe()?;
    let samplers = sampling::find_sampler(reg, &job.sampler.name)?;
    let req = sampling::request(&desc, &job.sampler, None, 0);
    let data_spec =
        adt_datasets::DataSpec::parse(&s.data).context("failed to open the training data")?;
    let data = adt_tuner::data::Batcher::new(&data_spec, desc.image_shape[1] as u32)
        .context("failed to open the training data")?;
    let disc_cfg = DiscConfig {
        loss: s.disc_loss,
        lr: s.d_lr,
        temperature: s.temperature,
        tau: s.tau,
        aug_color: s.aug_color,
        ..DiscConfig::default()
    };
    let cfg = TuneConfig {
        method: job.method,
        iters: s.iters,
        batch: s.batch,
        seed: job.seed,
        plan: req,
        start: s.start.0,
        k: s.k,
        k_random: s.k_random,
        path: s.path,
        guidance: s.guidance.unwrap_or(desc.default_guidance),
        detach_uncond: s.detach_uncond,
        lambda: s.lambda,
        h: s.h,
        lr: match job.method {
            Tuned::Ft => s.ft_lr.unwrap_or(s.lr),
            Tuned::Adt => s.lr,
        },
        warmup: s.warmup,
        d_warmup: s.d_warmup,
        clip: s.clip,
        accum: s.accum,
        disc: disc_cfg.clone(),
        max_non_finite: s.max_non_finite,
        checkpoint_every: s.checkpoint_every,
        caption_dropout: s.caption_dropout,
        d_schedule: s.d_schedule,
        d_input: s.d_input,
        d_steps: s.d_steps,
        ema: s.ema,
    };
    // The discriminator lives host-side, on the model's device.
    let dev = crate::device::open(&job.model.device.to_string())?;
    let disc = match job.method {
        Tuned::Adt => Some(discriminator(
            s.backbone.as_deref(),
            &desc.name,
            disc_cfg,
            job.seed,
            &dev,
        )?),
        Tuned::Ft => None,
    };
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    let version = reg
        .find(adt_plugin_host::Kind::Model, &job.model.plugin)
        .map_or_else(|_| "-".to_string(), |p| p.version.clone());
    check_identity(
        out,
        &[
            ("model", desc.name.clone()),
            ("plugin version", version),
            (
                "base weights",
                desc.weights_hash.clone().unwrap_or_else(|| "-".into()),
            ),
            ("training data", data_spec.to_string()),
            ("sampler", job.sampler.to_string()),
            ("backbone", s.backbone.clone().unwrap_or_else(|| "-".into())),
        ],
    )?;
    let method = method_name(job.method);
    if !quiet {
        eprintln!(
            "{method} `{}` with {} on {data_spec}: {} iterations of {} (model update every {}), \
             output in {}",
            desc.name,
            job.sampler,
            s.iters,
            s.batch,
            s.h,
            out.display()
        );
    }
    let mut bar = crate::progress::Bar::new(s.iters, method, quiet);
    let mut t = Tuner {
        model: &mut model,
        samplers: &samplers,
        disc,
        data,
        device: dev,
    };
    let result = tune(&mut t, &cfg, out, stop_after, reset_optimizer, &mut bar);
    bar.finish();
    // The log as parquet too (also after a failure: the rows so far are the diagnosis).
    let csv = out.join("log.csv");
    if csv.exists()
        && let Err(e) = adt_reports::csv_to_parquet(&csv)
    {
        eprintln!("warning: could not write log.parquet: {e}");
    }
    Ok(result?)
}

/// What a tune folder was started with beyond its settings (`identity.json`): a resume
/// with another model, plugin version, base weights, training data, sampler or backbone is
/// refused, naming what differs. A folder without a checkpoint is (re)started and takes the
/// new identity.
fn check_identity(out: &Path, id: &[(&str, String)]) -> anyhow::Result<()> {
    let path = out.join("identity.json");
    let now: BTreeMap<String, String> =
        id.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let resumable = ["checkpoint", "checkpoint.old"]
        .iter()
        .any(|c| out.join(c).join("state.json").is_file());
    if resumable && let Ok(text) = std::fs::read_to_string(&path) {
        let then: BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a tune identity", path.display()))?;
        let diff: Vec<String> = now
            .iter()
            .filter_map(|(k, v)| {
                let was = then.get(k)?;
                (was != v).then(|| format!("{k}: {was} → {v}"))
            })
            .collect();
        if !diff.is_empty() {
            bail!(
                "{} holds a tune started with another {}; resume it as it was started or use \
                 another --out",
                out.display(),
                diff.join("; ")
            );
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&now)?)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// The discriminator of a backbone spec (default: the shapes encoder for `tiny`).
fn discriminator(
    backbone: Option<&str>,
    model: &str,
    cfg: DiscConfig,
    seed: u64,
    dev: &candle_core::Device,
) -> anyhow::Result<adt_tuner::disc::Discriminator> {
    match backbone {
        Some("shapes") => Ok(shapes_discriminator(cfg, seed, dev)?),
        None if model == "tiny" => Ok(shapes_discriminator(cfg, seed, dev)?),
        Some(spec) if spec.starts_with("dinov2:") => {
            let path = super::backbone::resolve(spec)?;
            adt_tuner::adt::dinov2_discriminator(&path, cfg, seed, dev)
                .with_context(|| format!("failed to load the DINOv2 backbone {}", path.display()))
        }
        Some(other) => bail!("unknown backbone `{other}` (shapes or dinov2:SOURCE)"),
        None => bail!(
            "ADT on `{model}` needs a discriminator backbone: pass --backbone dinov2:SOURCE (a \
             Hugging Face Dinov2Model folder or repo id, e.g. {}); the built-in `shapes` \
             encoder only knows the built-in data set",
            super::backbone::DEFAULT_DINOV2
        ),
    }
}

/// One folder of samples: a model, a sampler, guidance, prompts, noise.
pub struct SampleJob {
    /// The model.
    pub model: ModelSpec,
    /// The sampler.
    pub sampler: SamplerSpec,
    /// Timestep spacing (default: the model's).
    pub spacing: Option<Spacing>,
    /// Guidance (default: the model's).
    pub guidance: Option<f32>,
    /// One prompt per image.
    pub prompts: Vec<String>,
    /// Images per model call.
    pub batch: usize,
    /// Seed of the initial and per-step noise.
    pub seed: u64,
    /// Given initial noise `[n, C, H, W]`.
    pub init: Option<HostTensor>,
    /// Image-to-image from these images (`[n, 3, H, W]` in [-1, 1]) at a start index.
    pub img2img: Option<(HostTensor, usize)>,
}

/// What a sample stage produced.
pub struct Sampled {
    /// The images, in prompt order.
    pub images: Vec<image::RgbImage>,
    /// The metadata written as `sample.json`.
    pub meta: serde_json::Value,
}

/// Generate the images of `job` into `out` (PNGs, `prompts.txt`, then `sample.json` last: a
/// folder without it is incomplete).
pub fn sample_images(
    reg: &Registry,
    job: &SampleJob,
    out: &Path,
    label: &str,
    quiet: bool,
) -> anyhow::Result<Sampled> {
    let mut model = job.model.open(reg)?;
    let desc = model.describe()?;
    sample_images_with(reg, &mut model, &desc, job, out, label, quiet)
}

/// [`sample_images`] with the model already open (`job.model` is what it was opened from).
pub fn sample_images_with(
    reg: &Registry,
    model: &mut adt_plugin_host::Model,
    desc: &adt_plugin_api::ModelDescription,
    job: &SampleJob,
    out: &Path,
    label: &str,
    quiet: bool,
) -> anyhow::Result<Sampled> {
    let desc = desc.clone();
    let plan = sampling::plan(
        reg,
        &desc,
        &job.sampler,
        job.spacing,
        job.img2img.as_ref().map(|(_, s)| *s),
    )?;
    if let Some(t) = &job.init
        && (t.shape.len() != 4 || t.shape[1..] != desc.latent_shape)
    {
        bail!(
            "the initial noise has shape {:?}; the model needs [N, {}, {}, {}]",
            t.shape,
            desc.latent_shape[0],
            desc.latent_shape[1],
            desc.latent_shape[2]
        );
    }
    let n = job.prompts.len();
    if n == 0 {
        bail!("nothing to generate (no prompts)");
    }
    let guidance = job.guidance.unwrap_or(desc.default_guidance);
    let x0 = match &job.img2img {
        Some((images, _)) => Some(model.encode_images(images)?),
        None => None,
    };
    let images = sampling::generate(
        model,
        &plan,
        &desc,
        &job.prompts,
        guidance,
        job.batch,
        job.seed,
        job.init.as_ref(),
        x0.as_ref(),
        label,
        quiet,
    )?;
    sampling::write_images(out, &images, &job.prompts)?;
    let spacing = match job.spacing {
        Some(s) => serde_json::to_value(s)?,
        None if desc.sampler_default_spacing => serde_json::json!("sampler default"),
        None => serde_json::to_value(desc.default_spacing)?,
    };
    let meta = serde_json::json!({
        "model": desc.name, "weights_hash": desc.weights_hash, "sampler": job.sampler.to_string(),
        "spacing": spacing, "guidance": guidance, "seed": job.seed, "n": n, "batch": job.batch,
        "timesteps": plan.timesteps, "img2img_start": job.img2img.as_ref().map(|(_, s)| *s),
    });
    Ok(Sampled { images, meta })
}

/// Write `sample.json` into `out` (the last file of a sample folder).
pub fn finish_samples(out: &Path, meta: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let p = out.join("sample.json");
    std::fs::write(&p, serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("failed to write {}", p.display()))?;
    Ok(p)
}
