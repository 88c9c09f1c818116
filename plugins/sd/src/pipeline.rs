//! A whole SD-family pipeline read from a diffusers folder: the family check, the scheduler's
//! training schedule, text conditioning as each pipeline builds it, the denoiser with
//! classifier-free guidance, and the VAE.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use adt_plugin_api::{NoiseSchedule, Parameterization, Spacing};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::clip::{ClipText, ClipTextConfig};
use crate::load;
use crate::mmdit::{Mmdit, MmditConfig};
use crate::nn::Source;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::PromptTokenizer;
use crate::unet::{AddedCond, UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use crate::{Error, Result};

/// Conditioning and guidance of one denoiser call.
#[derive(Debug, Clone, Copy)]
pub struct Guided<'a> {
    /// Prompt rows (B or 1).
    pub cond: &'a Cond,
    /// Unconditional rows for classifier-free guidance.
    pub uncond: Option<&'a Cond>,
    /// Guidance scale.
    pub guidance: f32,
    /// No gradient through the unconditional branch.
    pub detach_uncond: bool,
}

/// The model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x / 2.x (`StableDiffusionPipeline`).
    Sd15,
    /// SDXL (`StableDiffusionXLPipeline`).
    Sdxl,
    /// SD3 (`StableDiffusion3Pipeline`).
    Sd3,
}

impl Family {
    /// The plugin name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd15 => "sd15",
            Family::Sdxl => "sdxl",
            Family::Sd3 => "sd3",
        }
    }

    /// The Hugging Face repo a plugin of this family loads when no weights are given.
    pub fn default_repo(self) -> &'static str {
        match self {
            Family::Sd15 => "stable-diffusion-v1-5/stable-diffusion-v1-5",
            Family::Sdxl => "stabilityai/stable-diffusion-xl-base-1.0",
            Family::Sd3 => "stabilityai/stable-diffusion-3-medium-diffusers",
        }
    }

    /// The diffusers pipeline class of `model_index.json`.
    pub fn pipeline_class(self) -> &'static str {
        match self {
            Family::Sd15 => "StableDiffusionPipeline",
            Family::Sdxl => "StableDiffusionXLPipeline",
            Family::Sd3 => "StableDiffusion3Pipeline",
        }
    }

    /// The family of a pipeline class, if it is one of ours.
    pub fn of_class(class: &str) -> Option<Family> {
        [Family::Sd15, Family::Sdxl, Family::Sd3]
            .into_iter()
            .find(|f| f.pipeline_class() == class)
    }
}

/// Read `model_index.json` and refuse a folder of another family.
pub fn check_family(dir: &Path, want: Family) -> Result<serde_json::Value> {
    let idx_path = dir.join("model_index.json");
    if !idx_path.is_file() {
        return Err(Error::Pipeline(format!(
            "{} is not a diffusers pipeline folder (no model_index.json)",
            dir.display()
        )));
    }
    let idx: serde_json::Value = load::json(&idx_path)?;
    let class = idx["_class_name"].as_str().unwrap_or("(none)");
    match Family::of_class(class) {
        Some(f) if f == want => Ok(idx),
        Some(f) => Err(Error::Pipeline(format!(
            "{} holds a {class} ({} family); the `{}` plugin loads {} folders — use `{}` for this one",
            dir.display(),
            f.name(),
            want.name(),
            want.pipeline_class(),
            f.name()
        ))),
        None => Err(Error::Pipeline(format!(
            "{} holds a {class}; the `{}` plugin loads {} folders",
            dir.display(),
            want.name(),
            want.pipeline_class()
        ))),
    }
}

/// The scheduler config fields that define the training schedule.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    /// diffusers class name.
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// Training steps.
    #[serde(default = "default_n")]
    pub num_train_timesteps: usize,
    /// First β.
    #[serde(default = "default_b0")]
    pub beta_start: f64,
    /// Last β.
    #[serde(default = "default_b1")]
    pub beta_end: f64,
    /// `scaled_linear` or `linear`.
    #[serde(default = "default_bs")]
    pub beta_schedule: String,
    /// `epsilon` or `v_prediction`.
    #[serde(default)]
    pub prediction_type: Option<String>,
    /// `leading`, `trailing`, `linspace`; absent: each sampler's own default.
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    /// diffusers' steps_offset.
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM's final ᾱ.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// Flow-matching shift.
    #[serde(default)]
    pub shift: Option<f64>,
    /// Must be false.
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    /// Must be null.
    #[serde(default)]
    pub trained_betas: Option<serde_json::Value>,
}

fn default_n() -> usize {
    1000
}
fn default_b0() -> f64 {
    0.0001
}
fn default_b1() -> f64 {
    0.02
}
fn default_bs() -> String {
    "linear".into()
}

/// torch.linspace in float32 (the two-sided formula torch's CPU kernel uses).
fn linspace_f32(a: f32, b: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                a + step * i as f32
            } else {
                b - step * (n - i - 1) as f32
            }
        })
        .collect()
}

impl SchedulerConfig {
    /// ᾱ_t as diffusers computes it (float32 betas, float32 cumulative product).
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        if self.trained_betas.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Config(
                "scheduler: trained_betas is not supported".into(),
            ));
        }
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match self.beta_schedule.as_str() {
            "scaled_linear" => linspace_f32(
                (self.beta_start as f32).sqrt(),
                (self.beta_end as f32).sqrt(),
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            "linear" => linspace_f32(self.beta_start as f32, self.beta_end as f32, n),
            o => {
                return Err(Error::Config(format!(
                    "scheduler: beta_schedule `{o}` is not supported"
                )));
            }
        };
        let mut acc = 1f32;
        Ok(betas
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc as f64
            })
            .collect())
    }

    /// The training schedule and what the model predicts.
    pub fn schedule(&self, family: Family) -> Result<(NoiseSchedule, Parameterization)> {
        if family == Family::Sd3 {
            if self.use_dynamic_shifting {
                return Err(Error::Config(
                    "scheduler: dynamic shifting is not supported".into(),
                ));
            }
            return Ok((
                NoiseSchedule::Flow {
                    num_train_timesteps: self.num_train_timesteps,
                    shift: self.shift.unwrap_or(1.0),
                },
                Parameterization::Flow,
            ));
        }
        let p = match self.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => Parameterization::Eps,
            "v_prediction" => Parameterization::V,
            o => {
                return Err(Error::Config(format!(
                    "scheduler: prediction_type `{o}` is not supported"
                )));
            }
        };
        Ok((
            NoiseSchedule::Discrete {
                alphas_cumprod: self.alphas_cumprod()?,
            },
            p,
        ))
    }

    /// The configured timestep spacing, if any.
    pub fn spacing(&self) -> Result<Option<Spacing>> {
        Ok(match self.timestep_spacing.as_deref() {
            None => None,
            Some("leading") => Some(Spacing::Leading),
            Some("trailing") => Some(Spacing::Trailing),
            Some("linspace") => Some(Spacing::Linspace),
            Some(o) => return Err(Error::Config(format!("scheduler: timestep_spacing `{o}`"))),
        })
    }
}

/// The denoiser network.
pub enum Denoiser {
    /// SD 1.x / SDXL.
    UNet(Box<UNet>),
    /// SD3.
    Mmdit(Box<Mmdit>),
}

/// Encoded prompts: one row per prompt.
#[derive(Debug, Clone)]
pub struct Cond {
    /// Text sequence `[n, N, D]`.
    pub ctx: Tensor,
    /// Pooled text `[n, P]` (SDXL, SD3).
    pub pooled: Option<Tensor>,
}

impl Cond {
    /// Rows, repeated to `b` when the conditioning holds one prompt.
    pub fn rows(&self, b: usize) -> Result<Cond> {
        let n = self.ctx.dim(0)?;
        let rep = |t: &Tensor| -> Result<Tensor> {
            if n == b {
                Ok(t.clone())
            } else {
                let mut shape = t.dims().to_vec();
                shape[0] = b;
                Ok(t.broadcast_as(shape)?.contiguous()?)
            }
        };
        if n != b && n != 1 {
            return Err(Error::Input(format!(
                "conditioning holds {n} prompts for a batch of {b}"
            )));
        }
        Ok(Cond {
            ctx: rep(&self.ctx)?,
            pooled: self.pooled.as_ref().map(rep).transpose()?,
        })
    }
}

#[allow(clippy::large_enum_variant, reason = "one value per pipeline")]
enum Text {
    Sd15 {
        tok: PromptTokenizer,
        clip: ClipText,
    },
    Sdxl {
        tok1: PromptTokenizer,
        clip1: ClipText,
        tok2: PromptTokenizer,
        clip2: ClipText,
        zeros_for_empty: bool,
    },
    Sd3 {
        tok1: PromptTokenizer,
        clip1: ClipText,
        tok2: PromptTokenizer,
        clip2: ClipText,
        tok3: PromptTokenizer,
        t5: T5Encoder,
    },
}

/// How the trainable part of the denoiser is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// Every denoiser weight.
    Full,
    /// Low-rank adapters of rank r on the attention projections; the base is frozen.
    Lora(usize),
}

/// Options of [`Pipeline::load`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Compute dtype of the weights.
    pub dtype: DType,
    /// Weight variant to prefer (`fp16`).
    pub variant: Option<String>,
    /// What is trained.
    pub trainable: Trainable,
    /// Image height and width (default: the denoiser's sample size × the VAE factor).
    pub size: Option<(usize, usize)>,
    /// Seed of the adapters' initialisation.
    pub seed: u64,
}

/// A loaded pipeline.
pub struct Pipeline {
    /// Family.
    pub family: Family,
    /// Folder.
    pub dir: PathBuf,
    /// Scheduler config.
    pub scheduler: SchedulerConfig,
    /// The training schedule (computed once from the scheduler config).
    pub schedule: NoiseSchedule,
    /// What the denoiser predicts.
    pub parameterization: Parameterization,
    /// The configured timestep spacing (None: each sampler's default).
    pub spacing: Option<Spacing>,
    text: Text,
    /// The VAE.
    pub vae: Vae,
    /// The denoiser built on the trainable variables (graph recorded).
    train: Denoiser,
    /// The same denoiser on detached views of the same storage (no graph).
    eval: Denoiser,
    /// Trainable variables by name (denoiser weights, or LoRA adapters).
    pub vars: BTreeMap<String, Var>,
    /// All denoiser parameters (count).
    pub denoiser_params: u64,
    /// Latent `[C, H, W]`.
    pub latent_shape: [usize; 3],
    /// Image `[3, H, W]`.
    pub image_shape: [usize; 3],
    /// Device.
    pub device: Device,
    /// Dtype.
    pub dtype: DType,
}

/// Names of the linear layers that get LoRA adapters: attention projections.
pub fn lora_target(name: &str) -> bool {
    let targets = [
        ".to_q.weight",
        ".to_k.weight",
        ".to_v.weight",
        ".to_out.0.weight",
        ".add_q_proj.weight",
        ".add_k_proj.weight",
        ".add_v_proj.weight",
        ".to_add_out.weight",
    ];
    (name.contains("attn") || name.contains("attentions"))
        && targets.iter().any(|t| name.ends_with(t))
}

fn lora_init(
    src: &Source,
    rank: usize,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut names: Vec<&String> = src.tensors().keys().filter(|n| lora_target(n)).collect();
    names.sort();
    for (i, n) in names.into_iter().enumerate() {
        let w = &src.tensors()[n];
        let (o, inp) = w.dims2()?;
        let base = n.trim_end_matches(".weight");
        // PEFT's init: A ~ kaiming-uniform (bound 1/√in), B = 0, so training starts at the base.
        let bound = 1.0 / (inp as f32).sqrt();
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let data: Vec<f32> = (0..rank * inp)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(data, (rank, inp), device)?;
        out.insert(format!("{base}.lora_A.weight"), a);
        out.insert(
            format!("{base}.lora_B.weight"),
            Tensor::zeros((o, rank), DType::F32, device)?,
        );
    }
    Ok(out)
}

impl Pipeline {
    /// Load the pipeline in `dir` (already resolved to a folder), checking its family.
    pub fn load(dir: &Path, family: Family, opts: &Options, device: &Device) -> Result<Self> {
        let idx = check_family(dir, family)?;
        let origin = Origin::Dir {
            dir,
            idx,
            variant: opts.variant.as_deref(),
        };
        Self::build(&origin, family, opts, device)
    }

    /// A pipeline of the family's real architecture (embedded configs; SD 1.5 only) with
    /// invented weights (see [`Source::random`]) and hashed-word tokenizers: for measuring
    /// time and memory at real size without downloading weights.
    pub fn random(family: Family, seed: u64, opts: &Options, device: &Device) -> Result<Self> {
        if family != Family::Sd15 {
            return Err(Error::Config(format!(
                "random weights are available for sd15 only, not {}",
                family.name()
            )));
        }
        Self::build(&Origin::Random { seed }, family, opts, device)
    }

    fn build(origin: &Origin<'_>, family: Family, opts: &Options, device: &Device) -> Result<Self> {
        let dt = opts.dtype;
        let clip = |name: &str, proj: bool| -> Result<ClipText> {
            let cfg: ClipTextConfig = origin.config(name)?;
            let src = origin.source(name, dt, device)?;
            ClipText::load(&src.root(), &cfg, proj)
        };
        let tok = |name: &str, len: usize| origin.tokenizer(name, len);
        let text = match family {
            Family::Sd15 => Text::Sd15 {
                tok: tok("tokenizer", 77)?,
                clip: clip("text_encoder", false)?,
            },
            Family::Sdxl => Text::Sdxl {
                tok1: tok("tokenizer", 77)?,
                clip1: clip("text_encoder", false)?,
                tok2: tok("tokenizer_2", 77)?,
                clip2: clip("text_encoder_2", true)?,
                zeros_for_empty: origin.zeros_for_empty_prompt(),
            },
            Family::Sd3 => {
                let cfg: T5Config = origin.config("text_encoder_3")?;
                let src = origin.source("text_encoder_3", dt, device)?;
                Text::Sd3 {
                    tok1: tok("tokenizer", 77)?,
                    clip1: clip("text_encoder", true)?,
                    tok2: tok("tokenizer_2", 77)?,
                    clip2: clip("text_encoder_2", true)?,
                    tok3: tok("tokenizer_3", 256)?,
                    t5: T5Encoder::load(&src.root(), &cfg)?,
                }
            }
        };
        let scheduler: SchedulerConfig = origin.scheduler()?;
        let (schedule, parameterization) = scheduler.schedule(family)?;
        let spacing = scheduler.spacing()?;

        let vcfg: VaeConfig = origin.config("vae")?;
        let vsrc = origin.source("vae", dt, device)?;
        let vae = Vae::load(&vsrc.root(), &vcfg)?;
        let vae_factor = 1usize << (vcfg.block_out_channels.len() - 1);

        let dname = if family == Family::Sd3 {
            "transformer"
        } else {
            "unet"
        };
        let dcfg: serde_json::Value = origin.config(dname)?;
        let mut src = origin.source(dname, dt, device)?;
        if matches!(origin, Origin::Random { .. }) {
            // Make every tensor the architecture needs, then proceed as with a file.
            match family {
                Family::Sd3 => drop(Mmdit::load(
                    &src.root(),
                    &serde_json::from_value(dcfg.clone()).map_err(cfg_err)?,
                )?),
                _ => drop(UNet::load(
                    &src.root(),
                    &serde_json::from_value(dcfg.clone()).map_err(cfg_err)?,
                )?),
            }
            src = Source::new(dname, src.into_made());
        }
        let denoiser_params: u64 = src.tensors().values().map(|t| t.elem_count() as u64).sum();
        // Trainable variables: the whole denoiser, or fresh adapters over a frozen base.
        let mut vars = BTreeMap::new();
        let mut train_tensors = HashMap::new();
        let mut eval_tensors = HashMap::new();
        let adapters = match opts.trainable {
            Trainable::Full => HashMap::new(),
            Trainable::Lora(r) => lora_init(&src, r, opts.seed, device)?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_dtype(dt)?)))
                .collect::<Result<HashMap<_, _>>>()?,
        };
        // Consume the loaded tensors: each is dropped as soon as its variable holds a copy, so
        // loading never holds the denoiser twice.
        for (k, t) in src.into_tensors().into_iter().chain(adapters) {
            let trained = match opts.trainable {
                Trainable::Full => true,
                Trainable::Lora(_) => k.contains(".lora_"),
            };
            if trained {
                let var = Var::from_tensor(&t)?;
                drop(t);
                train_tensors.insert(k.clone(), var.as_tensor().clone());
                eval_tensors.insert(k.clone(), var.as_tensor().detach());
                vars.insert(k, var);
            } else {
                eval_tensors.insert(k.clone(), t.clone());
                train_tensors.insert(k, t);
            }
        }
        let (train_src, eval_src) = (
            Source::new(dname, train_tensors),
            Source::new(dname, eval_tensors),
        );
        let (train, eval, sample) = match family {
            Family::Sd3 => {
                let cfg: MmditConfig = serde_json::from_value(dcfg.clone()).map_err(cfg_err)?;
                (
                    Denoiser::Mmdit(Box::new(Mmdit::load(&train_src.root(), &cfg)?)),
                    Denoiser::Mmdit(Box::new(Mmdit::load(&eval_src.root(), &cfg)?)),
                    sample_size(&dcfg)?,
                )
            }
            _ => {
                let cfg: UNetConfig = serde_json::from_value(dcfg.clone()).map_err(cfg_err)?;
                let s = sample_size(&dcfg)?;
                (
                    Denoiser::UNet(Box::new(UNet::load(&train_src.root(), &cfg)?)),
                    Denoiser::UNet(Box::new(UNet::load(&eval_src.root(), &cfg)?)),
                    s,
                )
            }
        };
        let (h, w) = opts
            .size
            .unwrap_or((sample * vae_factor, sample * vae_factor));
        if h % vae_factor != 0 || w % vae_factor != 0 {
            return Err(Error::Config(format!(
                "image size {h}×{w} is not a multiple of the VAE factor {vae_factor}"
            )));
        }
        let lat = vcfg.latent_channels;
        Ok(Pipeline {
            family,
            dir: origin.dir(),
            scheduler,
            schedule,
            parameterization,
            spacing,
            text,
            vae,
            train,
            eval,
            vars,
            denoiser_params,
            latent_shape: [lat, h / vae_factor, w / vae_factor],
            image_shape: [3, h, w],
            device: device.clone(),
            dtype: dt,
        })
    }

    /// Encode prompts as the family's pipeline does.
    pub fn encode_prompts(&self, prompts: &[String]) -> Result<Cond> {
        let dev = &self.device;
        let ids = |tok: &PromptTokenizer| -> Result<Vec<Vec<u32>>> {
            prompts.iter().map(|p| tok.encode(p)).collect()
        };
        match &self.text {
            Text::Sd15 { tok, clip } => Ok(Cond {
                ctx: clip.forward(&ids(tok)?, dev)?.last_hidden,
                pooled: None,
            }),
            Text::Sdxl {
                tok1,
                clip1,
                tok2,
                clip2,
                zeros_for_empty,
            } => {
                let (o1, o2) = (
                    clip1.forward(&ids(tok1)?, dev)?,
                    clip2.forward(&ids(tok2)?, dev)?,
                );
                let mut ctx = Tensor::cat(&[&o1.penultimate, &o2.penultimate], 2)?;
                let mut pooled = o2.pooled;
                if *zeros_for_empty {
                    // The pipeline's default negative (negative_prompt=None): zeros for "".
                    let keep: Vec<f32> = prompts
                        .iter()
                        .map(|p| if p.is_empty() { 0.0 } else { 1.0 })
                        .collect();
                    let k = Tensor::from_vec(keep, prompts.len(), dev)?.to_dtype(ctx.dtype())?;
                    ctx = ctx.broadcast_mul(&k.reshape(((), 1, 1))?)?;
                    pooled = pooled.broadcast_mul(&k.reshape(((), 1))?)?;
                }
                Ok(Cond {
                    ctx,
                    pooled: Some(pooled),
                })
            }
            Text::Sd3 {
                tok1,
                clip1,
                tok2,
                clip2,
                tok3,
                t5,
            } => {
                let (l, g) = (
                    clip1.forward(&ids(tok1)?, dev)?,
                    clip2.forward(&ids(tok2)?, dev)?,
                );
                let te = t5.forward(&ids(tok3)?, dev)?;
                let clip = Tensor::cat(&[&l.penultimate, &g.penultimate], 2)?;
                Ok(Cond {
                    ctx: sd3_joint_context(&clip, &te)?,
                    pooled: Some(Tensor::cat(&[&l.pooled, &g.pooled], 1)?),
                })
            }
        }
    }

    /// The raw denoiser output for `x` at model times `t` under `cond` (rows = batch).
    /// `grad` selects the graph-recording copy.
    pub fn denoise_raw(&self, x: &Tensor, t: &[f32], cond: &Cond, grad: bool) -> Result<Tensor> {
        let net = if grad { &self.train } else { &self.eval };
        let x = x.to_dtype(self.dtype)?;
        let out = match net {
            Denoiser::UNet(u) => {
                let added = if u.needs_added_cond() {
                    let b = x.dim(0)?;
                    let [_, h, w] = self.image_shape;
                    let ids: Vec<f32> = (0..b)
                        .flat_map(|_| [h as f32, w as f32, 0.0, 0.0, h as f32, w as f32])
                        .collect();
                    Some(AddedCond {
                        text_embeds: cond.pooled.clone().ok_or_else(|| {
                            Error::Input("SDXL conditioning lacks the pooled text".into())
                        })?,
                        time_ids: Tensor::from_vec(ids, (b, 6), &self.device)?,
                    })
                } else {
                    None
                };
                u.forward(&x, t, &cond.ctx, added.as_ref())?
            }
            Denoiser::Mmdit(m) => {
                let pooled = cond
                    .pooled
                    .as_ref()
                    .ok_or_else(|| Error::Input("SD3 conditioning lacks the pooled text".into()))?;
                m.forward(&x, t, &cond.ctx, pooled)?
            }
        };
        Ok(out.to_dtype(DType::F32)?)
    }

    /// Classifier-free guided output: `u + g·(c − u)` with the CFG batch `[uncond, cond]`;
    /// guidance 1 (or no uncond) evaluates the conditional rows only.
    pub fn denoise(&self, x: &Tensor, t: &[f32], g: &Guided<'_>, grad: bool) -> Result<Tensor> {
        let Guided {
            cond,
            uncond,
            guidance,
            detach_uncond,
        } = *g;
        let b = x.dim(0)?;
        if t.len() != b {
            return Err(Error::Input(format!(
                "{} times for a batch of {b}",
                t.len()
            )));
        }
        let c = cond.rows(b)?;
        match uncond {
            Some(u) if guidance != 1.0 => {
                let u = u.rows(b)?;
                let xx = Tensor::cat(&[x, x], 0)?;
                let tt: Vec<f32> = t.iter().chain(t.iter()).copied().collect();
                let cc = Cond {
                    ctx: Tensor::cat(&[&u.ctx, &c.ctx], 0)?,
                    pooled: match (&u.pooled, &c.pooled) {
                        (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
                        _ => None,
                    },
                };
                let out = self.denoise_raw(&xx, &tt, &cc, grad)?;
                let mut un = out.narrow(0, 0, b)?;
                let co = out.narrow(0, b, b)?;
                if detach_uncond {
                    un = un.detach();
                }
                Ok((&un + ((co - &un)? * guidance as f64)?)?)
            }
            _ => self.denoise_raw(x, t, &c, grad),
        }
    }
}

fn cfg_err(e: serde_json::Error) -> Error {
    Error::Config(format!("denoiser config: {e}"))
}

fn sample_size(cfg: &serde_json::Value) -> Result<usize> {
    cfg["sample_size"]
        .as_u64()
        .map(|s| s as usize)
        .ok_or_else(|| Error::Config("the denoiser config lacks sample_size".into()))
}

/// SD 1.5's public configs (stable-diffusion-v1-5), for [`Pipeline::random`].
const SD15_CONFIGS: [(&str, &str); 4] = [
    (
        "unet",
        r#"{"in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32,
        "norm_eps": 1e-5, "sample_size": 64, "flip_sin_to_cos": true, "freq_shift": 0,
        "downsample_padding": 1, "mid_block_scale_factor": 1, "use_linear_projection": false}"#,
    ),
    (
        "vae",
        r#"{"in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215,
        "sample_size": 512}"#,
    ),
    (
        "text_encoder",
        r#"{"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768, "eos_token_id": 2}"#,
    ),
    (
        "scheduler",
        r#"{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false,
        "skip_prk_steps": true, "steps_offset": 1}"#,
    ),
];

/// Where a pipeline's components come from.
enum Origin<'a> {
    /// A diffusers folder and its parsed `model_index.json`.
    Dir {
        dir: &'a Path,
        idx: serde_json::Value,
        variant: Option<&'a str>,
    },
    /// Embedded configs and invented weights.
    Random { seed: u64 },
}

impl Origin<'_> {
    fn dir(&self) -> PathBuf {
        match self {
            Origin::Dir { dir, .. } => dir.to_path_buf(),
            Origin::Random { seed } => PathBuf::from(format!("random:sd15?seed={seed}")),
        }
    }

    fn sub(&self, name: &str) -> Result<PathBuf> {
        let Origin::Dir { dir, idx, .. } = self else {
            return Err(Error::Config(format!(
                "no folder for `{name}` in random mode"
            )));
        };
        let p = dir.join(name);
        if idx
            .get(name)
            .is_some_and(|x| x.is_array() && !x[0].is_null())
            && p.is_dir()
        {
            Ok(p)
        } else {
            Err(Error::Pipeline(format!(
                "{}: the pipeline lacks its `{name}` component",
                dir.display()
            )))
        }
    }

    fn embedded(name: &str) -> Result<&'static str> {
        SD15_CONFIGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| Error::Config(format!("no embedded config for `{name}`")))
    }

    fn config<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        match self {
            Origin::Dir { .. } => load::config(&self.sub(name)?),
            Origin::Random { .. } => serde_json::from_str(Self::embedded(name)?)
                .map_err(|e| Error::Config(format!("embedded {name} config: {e}"))),
        }
    }

    fn scheduler(&self) -> Result<SchedulerConfig> {
        match self {
            Origin::Dir { .. } => load::json(&self.sub("scheduler")?.join("scheduler_config.json")),
            Origin::Random { .. } => self.config("scheduler"),
        }
    }

    fn source(&self, name: &str, dtype: DType, device: &Device) -> Result<Source> {
        match self {
            Origin::Dir { variant, .. } => {
                load::source(&self.sub(name)?, name, *variant, dtype, device)
            }
            Origin::Random { seed } => Ok(Source::random(name, *seed, dtype, device)),
        }
    }

    fn tokenizer(&self, name: &str, len: usize) -> Result<PromptTokenizer> {
        match self {
            Origin::Dir { .. } => PromptTokenizer::load(&self.sub(name)?, len),
            Origin::Random { .. } => Ok(PromptTokenizer::hashed(len, 49408, Some(49406), 49407)),
        }
    }

    fn zeros_for_empty_prompt(&self) -> bool {
        match self {
            Origin::Dir { idx, .. } => idx["force_zeros_for_empty_prompt"]
                .as_bool()
                .unwrap_or(true),
            Origin::Random { .. } => true,
        }
    }
}

/// SD3's joint text context as diffusers builds it: the CLIP rows (`[b, n, c]`, the two
/// encoders' penultimate states side by side) brought to the T5 width — zero-padded when
/// narrower, cut to it when wider (`F.pad` with a negative amount crops) — then the T5 rows
/// appended along the sequence.
pub fn sd3_joint_context(clip: &Tensor, t5: &Tensor) -> Result<Tensor> {
    let (cw, tw) = (clip.dim(2)?, t5.dim(2)?);
    let clip = if cw >= tw {
        clip.narrow(2, 0, tw)?
    } else {
        clip.pad_with_zeros(2, 0, tw - cw)?
    };
    Ok(Tensor::cat(&[&clip, t5], 1)?)
}
