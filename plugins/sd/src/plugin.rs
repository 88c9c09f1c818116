//! The SD-family model plugins behind the C ABI: [`SdPlugin<F>`] implements every model call
//! of DESIGN §2.1 on a [`Pipeline`]; `sd15_header`, `sdxl_header` and `sd3_header` declare
//! the three plugins (each packaged as its own `cdylib` in `plugins/sd15|sdxl|sd3`).
//!
//! Instance config (JSON passed to `create`):
//! - `weights` (default: the family's usual Hugging Face repo, [`Family::default_repo`]): a
//!   diffusers pipeline folder, a Hugging Face repo id (`org/name`,
//!   looked up in the Hugging Face cache), a checkpoint this plugin saved (`model.safetensors`
//!   or its folder: the trained tensors over the base pipeline named in its metadata), or
//!   `random:sd15[?seed=N]` (SD 1.5's architecture with invented weights, for timing);
//! - `device` (`cpu`, `cuda:N`), `dtype` (`f32` default, `bf16`, `f16`), `variant` (`fp16`:
//!   prefer `*.fp16.safetensors`), `lora_rank` (train rank-r adapters on the attention
//!   projections instead of every weight), `height` / `width` (pixels), `seed`.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, OptimConfig,
    Parameterization, PluginError, PluginResult, Spacing, StepStats, TensorRef,
};
use adt_plugin_kit::{
    Handles, Trainer, err, sha256_file, sha256_hex, to_candle, to_host, write_atomic,
};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::hub;
use crate::pipeline::{Cond, Family, Guided, Options, Pipeline, Trainable};

/// Format tag of the checkpoints this plugin writes.
pub const CHECKPOINT_FORMAT: &str = "adt-sd-checkpoint-v1";

/// A family marker.
pub trait FamilyTag: 'static {
    /// The family.
    const FAMILY: Family;
}

/// SD 1.x marker.
pub struct Sd15;
/// SDXL marker.
pub struct Sdxl;
/// SD3 marker.
pub struct Sd3;
impl FamilyTag for Sd15 {
    const FAMILY: Family = Family::Sd15;
}
impl FamilyTag for Sdxl {
    const FAMILY: Family = Family::Sdxl;
}
impl FamilyTag for Sd3 {
    const FAMILY: Family = Family::Sd3;
}

#[cfg(not(feature = "cuda"))]
adt_plugin_api::declare_model_plugin!(pub fn sd15_header, SdPlugin<Sd15>, name = "sd15", version = env!("CARGO_PKG_VERSION"));
#[cfg(feature = "cuda")]
adt_plugin_api::declare_model_plugin!(pub fn sd15_header, SdPlugin<Sd15>, name = "sd15", version = env!("CARGO_PKG_VERSION"), features = "[\"cpu\",\"cuda\"]");
#[cfg(not(feature = "cuda"))]
adt_plugin_api::declare_model_plugin!(pub fn sdxl_header, SdPlugin<Sdxl>, name = "sdxl", version = env!("CARGO_PKG_VERSION"));
#[cfg(feature = "cuda")]
adt_plugin_api::declare_model_plugin!(pub fn sdxl_header, SdPlugin<Sdxl>, name = "sdxl", version = env!("CARGO_PKG_VERSION"), features = "[\"cpu\",\"cuda\"]");
#[cfg(not(feature = "cuda"))]
adt_plugin_api::declare_model_plugin!(pub fn sd3_header, SdPlugin<Sd3>, name = "sd3", version = env!("CARGO_PKG_VERSION"));
#[cfg(feature = "cuda")]
adt_plugin_api::declare_model_plugin!(pub fn sd3_header, SdPlugin<Sd3>, name = "sd3", version = env!("CARGO_PKG_VERSION"), features = "[\"cpu\",\"cuda\"]");

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConfig {
    #[serde(default)]
    weights: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    lora_rank: Option<usize>,
    #[serde(default)]
    height: Option<usize>,
    #[serde(default)]
    width: Option<usize>,
    #[serde(default)]
    seed: u64,
}

/// What a saved checkpoint says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
struct CheckpointMeta {
    family: String,
    base: PathBuf,
    base_hash: String,
    lora_rank: Option<usize>,
    height: usize,
    width: usize,
}

/// An SD-family model instance.
pub struct SdPlugin<F: FamilyTag> {
    pipe: Pipeline,
    conds: Handles<Cond>,
    opt: Trainer,
    base_hash: String,
    weights_hash: String,
    lora_rank: Option<usize>,
    _f: PhantomData<F>,
}

fn e(x: crate::Error) -> PluginError {
    PluginError(x.to_string())
}

/// The content hash of a pipeline folder: every component's config and weight files, in a
/// fixed order.
pub fn pipeline_hash(dir: &Path, variant: Option<&str>) -> PluginResult<String> {
    pipeline_hash_in(dir, variant, hash_cache_dir().as_deref())
}

/// [`pipeline_hash`] with an explicit cache folder (None: no cache).
pub fn pipeline_hash_in(
    dir: &Path,
    variant: Option<&str>,
    cache: Option<&Path>,
) -> PluginResult<String> {
    pipeline_hash_verified(dir, variant, cache, crate::hub::verify_always())
}

/// [`pipeline_hash_in`]; with `verify` every file is hashed in full (and checked against the
/// hash the hub published) even when the cache has an entry for the files' sizes and times.
pub fn pipeline_hash_verified(
    dir: &Path,
    variant: Option<&str>,
    cache: Option<&Path>,
    verify: bool,
) -> PluginResult<String> {
    // What is hashed, and each file's size and modification time: the key of a small cache,
    // so that the gigabytes of a real pipeline are read once, not at every instance.
    let mut files: Vec<PathBuf> = vec![dir.join("model_index.json")];
    let mut comps: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    comps.sort();
    for c in comps {
        for f in ["config.json", "scheduler_config.json", "tokenizer.json"] {
            if c.join(f).is_file() {
                files.push(c.join(f));
            }
        }
        if let Ok(w) = crate::load::weight_files(&c, variant) {
            files.extend(w);
        }
    }
    let mut key = Vec::new();
    for f in &files {
        let m = std::fs::metadata(f)?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        key.extend(format!("{}\t{}\t{mtime}\n", abs.display(), m.len()).into_bytes());
    }
    let cache = cache.map(|d| d.join(sha256_hex(&key)));
    if let Some(c) = &cache
        && !verify
        && let Ok(h) = std::fs::read_to_string(c)
        && h.trim().len() == 64
    {
        return Ok(h.trim().to_string());
    }
    let mut h = Vec::new();
    for f in &files {
        let got = sha256_file(f)?;
        // A file of the Hugging Face cache carries the hash the hub published: a download
        // that does not match it is corrupt (or was changed), not weights to trust.
        if let Some(want) = crate::hub::published_sha256(f)
            && want != got
        {
            return Err(PluginError(format!(
                "{}: its content hashes to {got}, but the hub published {want} for it; delete \
                 it from the Hugging Face cache and download it again",
                f.display()
            )));
        }
        h.extend(got.into_bytes());
    }
    let hash = sha256_hex(&h);
    if let Some(c) = cache
        && let Some(parent) = c.parent()
        && std::fs::create_dir_all(parent).is_ok()
    {
        // A cache: failing to write it only costs the next instance a re-read.
        let _ = write_atomic(
            parent,
            &c.file_name().unwrap_or_default().to_string_lossy(),
            hash.as_bytes(),
        );
    }
    Ok(hash)
}

/// `ADT_CACHE_DIR` (else `$XDG_CACHE_HOME/adt-bench`, else `~/.cache/adt-bench`)`/pipeline-hashes`.
fn hash_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("ADT_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("adt-bench")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/adt-bench")))?;
    Some(base.join("pipeline-hashes"))
}

fn parse_dtype(s: Option<&str>) -> PluginResult<DType> {
    Ok(match s.unwrap_or("f32") {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" | "fp16" => DType::F16,
        // For gradient checks against finite differences (CPU).
        "f64" | "float64" => DType::F64,
        o => {
            return Err(PluginError(format!(
                "unknown dtype `{o}` (f32, bf16, f16 or f64)"
            )));
        }
    })
}

fn read_checkpoint(path: &Path) -> PluginResult<(CheckpointMeta, Vec<u8>)> {
    let bytes = std::fs::read(path)
        .map_err(|x| PluginError(format!("cannot read {}: {x}", path.display())))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|x| PluginError(format!("{}: not a safetensors file: {x}", path.display())))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(PluginError(format!(
            "{} is neither a diffusers pipeline folder nor a checkpoint of this plugin \
             (format {:?}, expected {CHECKPOINT_FORMAT:?})",
            path.display(),
            meta.get("format")
        )));
    }
    let info: CheckpointMeta = serde_json::from_str(meta.get("checkpoint").map_or("", |s| s))
        .map_err(|x| PluginError(format!("{}: bad checkpoint metadata: {x}", path.display())))?;
    Ok((info, bytes))
}

impl<F: FamilyTag> SdPlugin<F> {
    fn cond(&self, h: u64) -> PluginResult<&Cond> {
        self.conds.get(h)
    }

    fn check_latents(&self, x: TensorRef<'_>, what: &str) -> PluginResult<()> {
        let [c, h, w] = self.pipe.latent_shape;
        if x.shape.len() != 4 || x.shape[1..] != [c, h, w] {
            return Err(PluginError(format!(
                "{what} must be [B, {c}, {h}, {w}], got {:?}",
                x.shape
            )));
        }
        Ok(())
    }

    fn guided(&self, args: &DenoiseArgs<'_>, x: &Tensor, grad: bool) -> PluginResult<Tensor> {
        self.check_latents(args.x, "x")?;
        let c = self.cond(args.cond)?;
        let u = args.uncond.map(|h| self.cond(h)).transpose()?;
        let g = Guided {
            cond: c,
            uncond: u,
            guidance: args.guidance,
            detach_uncond: args.detach_uncond,
        };
        self.pipe.denoise(x, args.t, &g, grad).map_err(e)
    }

    /// Overlay the trained tensors of checkpoint bytes onto the variables.
    fn overlay(&mut self, bytes: &[u8]) -> PluginResult<()> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|x| PluginError(format!("corrupt checkpoint: {x}")))?;
        for (name, var) in &self.pipe.vars {
            let view = st
                .tensor(name)
                .map_err(|_| PluginError(format!("checkpoint lacks tensor `{name}`")))?;
            let t = candle_core::safetensors::Load::load(&view, &self.pipe.device)
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(err)?;
            if t.dims() != var.dims() {
                return Err(PluginError(format!(
                    "checkpoint tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t).map_err(err)?;
        }
        if st.len() != self.pipe.vars.len() {
            return Err(PluginError(format!(
                "checkpoint holds {} tensors, the model trains {}",
                st.len(),
                self.pipe.vars.len()
            )));
        }
        Ok(())
    }

    /// The pipeline (for tests).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipe
    }

    /// The accumulated gradient of a trainable tensor (for tests).
    pub fn grad(&self, name: &str) -> Option<HostTensor> {
        self.opt.grad(name).and_then(|g| to_host(g).ok())
    }
}

impl<F: FamilyTag> ModelPlugin for SdPlugin<F> {
    fn create(config: &serde_json::Value) -> PluginResult<Self> {
        let family = F::FAMILY;
        let c: CreateConfig = serde_json::from_value(config.clone())
            .map_err(|x| PluginError(format!("invalid {} model config: {x}", family.name())))?;
        let device: Device = adt_plugin_kit::device(c.device.as_deref())?;
        let dtype = parse_dtype(c.dtype.as_deref())?;
        if dtype == DType::BF16 && device.is_cpu() {
            return Err(PluginError::msg(
                "dtype bf16 needs a CUDA device (candle's CPU matmul has no bf16); use f32 or f16 on CPU",
            ));
        }
        // Without weights: the family's usual Hugging Face repo (cache, else download).
        let w = c
            .weights
            .clone()
            .unwrap_or_else(|| family.default_repo().to_string());
        // A checkpoint of ours (file, or folder holding model.safetensors without a
        // model_index.json), or a pipeline.
        let p = PathBuf::from(&w);
        let ckpt_file = if p.is_file() {
            Some(p.clone())
        } else if p.is_dir()
            && !p.join("model_index.json").exists()
            && p.join("model.safetensors").is_file()
        {
            Some(p.join("model.safetensors"))
        } else {
            None
        };
        let (dir, ckpt) = match ckpt_file {
            Some(f) => {
                let (meta, bytes) = read_checkpoint(&f)?;
                if meta.family != family.name() {
                    return Err(PluginError(format!(
                        "{} is a {} checkpoint, not {}",
                        f.display(),
                        meta.family,
                        family.name()
                    )));
                }
                (meta.base.clone(), Some((meta, bytes)))
            }
            None if w.starts_with("random:") => (PathBuf::from(&w), None),
            None => (hub::resolve(&w, c.variant.as_deref()).map_err(e)?, None),
        };
        // `random:sd15[?seed=N&size=S]`: the real architecture with invented weights (timing).
        let mut random_size = None;
        let random_seed = match dir.to_str().and_then(|d| d.strip_prefix("random:")) {
            Some(rest) => {
                let (fam, query) = rest.split_once('?').unwrap_or((rest, ""));
                if fam != family.name() {
                    return Err(PluginError(format!(
                        "`{w}` names {fam}, this plugin is {}",
                        family.name()
                    )));
                }
                let mut seed = 0u64;
                for kv in query.split('&').filter(|s| !s.is_empty()) {
                    let bad = || PluginError(format!("bad `{kv}` in `{w}` (seed=N, size=PIXELS)"));
                    match kv.split_once('=') {
                        Some(("seed", v)) => seed = v.parse().map_err(|_| bad())?,
                        Some(("size", v)) => {
                            let s: usize = v.parse().map_err(|_| bad())?;
                            random_size = Some((s, s));
                        }
                        _ => return Err(bad()),
                    }
                }
                Some(seed)
            }
            None => None,
        };
        let lora_rank = match &ckpt {
            Some((m, _)) => m.lora_rank,
            None => c.lora_rank,
        };
        if lora_rank == Some(0) {
            return Err(PluginError::msg("lora_rank must be at least 1"));
        }
        let size = match (&ckpt, c.height, c.width) {
            (Some((m, _)), _, _) => Some((m.height, m.width)),
            (None, Some(h), Some(w)) => Some((h, w)),
            (None, None, None) => random_size,
            _ => return Err(PluginError::msg("give both height and width, or neither")),
        };
        let opts = Options {
            dtype,
            variant: c.variant.clone(),
            trainable: lora_rank.map_or(Trainable::Full, Trainable::Lora),
            size,
            seed: c.seed,
        };
        let (pipe, base_hash) = match random_seed {
            Some(seed) => (
                Pipeline::random(family, seed, &opts, &device).map_err(e)?,
                format!("random:{}?seed={seed}", family.name()),
            ),
            None => (
                Pipeline::load(&dir, family, &opts, &device).map_err(e)?,
                pipeline_hash(&dir, c.variant.as_deref())?,
            ),
        };
        let mut me = SdPlugin {
            pipe,
            conds: Handles::default(),
            opt: Trainer::new(),
            weights_hash: base_hash.clone(),
            base_hash,
            lora_rank,
            _f: PhantomData,
        };
        if let Some((meta, bytes)) = ckpt {
            if meta.base_hash != me.base_hash {
                return Err(PluginError(format!(
                    "the checkpoint was trained from a pipeline with hash {} but {} now hashes to {}",
                    meta.base_hash,
                    dir.display(),
                    me.base_hash
                )));
            }
            me.overlay(&bytes)?;
            me.weights_hash = sha256_hex(&bytes);
        }
        Ok(me)
    }

    fn describe(&self) -> PluginResult<ModelDescription> {
        let p = &self.pipe;
        let (schedule, parameterization, spacing) =
            (p.schedule.clone(), p.parameterization, p.spacing);
        let trainable: u64 = p.vars.values().map(|v| v.elem_count() as u64).sum();
        let vc = p.vae.config();
        Ok(ModelDescription {
            name: p.family.name().into(),
            family: "stable-diffusion".into(),
            parameterization,
            schedule,
            latent_shape: p.latent_shape,
            image_shape: p.image_shape,
            parameters: p.denoiser_params
                + if self.lora_rank.is_some() {
                    trainable
                } else {
                    0
                },
            trainable_parameters: trainable,
            default_guidance: match p.family {
                Family::Sd15 => 7.5,
                Family::Sdxl => 5.0,
                Family::Sd3 => 7.0,
            },
            default_spacing: spacing.unwrap_or(Spacing::Leading),
            sampler_default_spacing: spacing.is_none(),
            steps_offset: p.scheduler.steps_offset,
            set_alpha_to_one: p.scheduler.set_alpha_to_one,
            weights_hash: Some(self.weights_hash.clone()),
            trains: true,
            extra: serde_json::json!({
                "pipeline": p.dir.display().to_string(),
                "hub": crate::hub::origin(&p.dir)
                    .map(|(repo, revision)| serde_json::json!({"repo": repo, "revision": revision})),
                "pipeline_hash": self.base_hash,
                "scheduler": p.scheduler.class_name,
                "dtype": format!("{:?}", p.dtype).to_lowercase(),
                "device": format!("{:?}", p.device),
                "lora_rank": self.lora_rank,
                "vae_scaling_factor": vc.scaling_factor,
                "vae_shift_factor": vc.shift_factor,
            }),
        })
    }

    fn encode_prompts(&mut self, prompts: &[String]) -> PluginResult<u64> {
        if prompts.is_empty() {
            return Err(PluginError::msg("no prompts"));
        }
        let c = self.pipe.encode_prompts(prompts).map_err(e)?;
        Ok(self.conds.insert(c))
    }

    fn release_cond(&mut self, handle: u64) -> PluginResult<()> {
        self.conds.remove(handle)
    }

    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
        let [_, h, w] = self.pipe.image_shape;
        if images.shape.len() != 4 || images.shape[1..] != [3, h, w] {
            return Err(PluginError(format!(
                "images must be [B, 3, {h}, {w}], got {:?}",
                images.shape
            )));
        }
        let x = to_candle(images, &self.pipe.device)?
            .to_dtype(self.pipe.dtype)
            .map_err(err)?;
        to_host(&self.pipe.vae.encode(&x).map_err(e)?)
    }

    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
        self.check_latents(latents, "latents")?;
        let z = to_candle(latents, &self.pipe.device)?
            .to_dtype(self.pipe.dtype)
            .map_err(err)?;
        to_host(&self.pipe.vae.decode(&z).map_err(e)?)
    }

    fn decode_vjp(
        &mut self,
        latents: TensorRef<'_>,
        cotangent: TensorRef<'_>,
    ) -> PluginResult<HostTensor> {
        self.check_latents(latents, "latents")?;
        let z = Var::from_tensor(
            &to_candle(latents, &self.pipe.device)?
                .to_dtype(self.pipe.dtype)
                .map_err(err)?,
        )
        .map_err(err)?;
        let out = self.pipe.vae.decode(z.as_tensor()).map_err(e)?;
        let c = to_candle(cotangent, &self.pipe.device)?;
        if c.dims() != out.dims() {
            return Err(PluginError(format!(
                "cotangent has shape {:?}, the images {:?}",
                c.dims(),
                out.dims()
            )));
        }
        let loss = (out.to_dtype(DType::F32).map_err(err)? * c)
            .and_then(|t| t.sum_all())
            .map_err(err)?;
        let grads = loss.backward().map_err(err)?;
        let g = grads
            .get(z.as_tensor())
            .ok_or_else(|| PluginError::msg("no gradient reached the latents"))?;
        to_host(g)
    }

    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let x = to_candle(args.x, &self.pipe.device)?;
        to_host(&self.guided(args, &x, false)?)
    }

    fn denoise_vjp(
        &mut self,
        args: &DenoiseArgs<'_>,
        cotangent: TensorRef<'_>,
        want_input_cotangent: bool,
    ) -> PluginResult<Option<HostTensor>> {
        let x0 = to_candle(args.x, &self.pipe.device)?;
        let xv = if want_input_cotangent {
            Some(Var::from_tensor(&x0).map_err(err)?)
        } else {
            None
        };
        let x = xv.as_ref().map_or(&x0, |v| v.as_tensor());
        let out = self.guided(args, x, true)?;
        let c = to_candle(cotangent, &self.pipe.device)?;
        if c.dims() != out.dims() {
            return Err(PluginError(format!(
                "cotangent has shape {:?}, the output {:?}",
                c.dims(),
                out.dims()
            )));
        }
        let loss = (out * c).and_then(|t| t.sum_all()).map_err(err)?;
        let grads = loss.backward().map_err(err)?;
        self.opt.accumulate(&self.pipe.vars, &grads)?;
        match xv {
            Some(v) => {
                let g = grads
                    .get(v.as_tensor())
                    .ok_or_else(|| PluginError::msg("no gradient reached the input"))?;
                Ok(Some(to_host(g)?))
            }
            None => Ok(None),
        }
    }

    fn diffusion_loss(
        &mut self,
        x0: TensorRef<'_>,
        cond: u64,
        seed: u64,
        weight: f64,
    ) -> PluginResult<f64> {
        self.check_latents(x0, "x0")?;
        let b = x0.shape[0];
        let n = x0.data.len();
        let per = n / b;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let param = self.pipe.parameterization;
        let mut coef = Vec::with_capacity(b); // (a, s, model time)
        for _ in 0..b {
            coef.push(match &self.pipe.schedule {
                NoiseSchedule::Discrete { alphas_cumprod } => {
                    let t = rng.random_range(0..alphas_cumprod.len());
                    let ab = alphas_cumprod[t];
                    (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32, t as f32)
                }
                NoiseSchedule::Flow {
                    num_train_timesteps,
                    shift,
                } => {
                    let u: f64 = rng.random_range(0.0..1.0);
                    let s = shift * u / (1.0 + (shift - 1.0) * u);
                    (
                        (1.0 - s) as f32,
                        s as f32,
                        (s * *num_train_timesteps as f64) as f32,
                    )
                }
            });
        }
        let eps: Vec<f32> = (0..n)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let mut xt = vec![0f32; n];
        let mut target = vec![0f32; n];
        for (i, &(a, s, _)) in coef.iter().enumerate() {
            for j in i * per..(i + 1) * per {
                let (x, z) = (x0.data[j], eps[j]);
                xt[j] = a * x + s * z;
                target[j] = match param {
                    Parameterization::Eps => z,
                    Parameterization::V => a * z - s * x,
                    Parameterization::Flow => z - x,
                };
            }
        }
        let dev = &self.pipe.device;
        let xt = Tensor::from_vec(xt, x0.shape, dev).map_err(err)?;
        let target = Tensor::from_vec(target, x0.shape, dev).map_err(err)?;
        let t: Vec<f32> = coef.iter().map(|c| c.2).collect();
        let c = self.cond(cond)?.rows(b).map_err(e)?;
        let pred = self
            .pipe
            .denoise_raw(&xt, &t, &c, weight != 0.0)
            .map_err(e)?;
        let loss = (pred - target)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .map_err(err)?;
        let value = loss.to_scalar::<f32>().map_err(err)? as f64;
        if weight != 0.0 {
            let grads = (loss * weight).and_then(|l| l.backward()).map_err(err)?;
            self.opt.accumulate(&self.pipe.vars, &grads)?;
        }
        Ok(value)
    }

    fn zero_grad(&mut self) -> PluginResult<()> {
        self.opt.zero_grad();
        Ok(())
    }

    fn step(&mut self, config: &OptimConfig) -> PluginResult<StepStats> {
        self.opt.step(&self.pipe.vars, config)
    }

    fn save_state(&self, dir: &Path) -> PluginResult<()> {
        let base = if self.pipe.dir.to_string_lossy().starts_with("random:") {
            self.pipe.dir.clone()
        } else {
            std::fs::canonicalize(&self.pipe.dir).unwrap_or_else(|_| self.pipe.dir.clone())
        };
        let meta = CheckpointMeta {
            family: self.pipe.family.name().into(),
            base,
            base_hash: self.base_hash.clone(),
            lora_rank: self.lora_rank,
            height: self.pipe.image_shape[1],
            width: self.pipe.image_shape[2],
        };
        let tensors: Vec<(String, Tensor)> = self
            .pipe
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let mut m = HashMap::new();
        m.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        m.insert("checkpoint".to_string(), serde_json::to_string(&meta)?);
        write_atomic(
            dir,
            "model.safetensors",
            &adt_plugin_kit::serialize(&tensors, m.clone())?,
        )?;
        if !self.opt.ema().is_empty() {
            // The moving average in the checkpoint's own format: `weights=.../ema.safetensors`
            // samples from it like from model.safetensors.
            let avg: Vec<(String, Tensor)> = self
                .opt
                .ema()
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect();
            write_atomic(dir, "ema.safetensors", &adt_plugin_kit::serialize(&avg, m)?)?;
        }
        write_atomic(dir, "optimizer.safetensors", &self.opt.state_bytes()?)
    }

    fn load_state(&mut self, dir: &Path) -> PluginResult<()> {
        let (meta, bytes) = read_checkpoint(&dir.join("model.safetensors"))?;
        if meta.family != self.pipe.family.name()
            || meta.base_hash != self.base_hash
            || meta.lora_rank != self.lora_rank
            || (meta.height, meta.width) != (self.pipe.image_shape[1], self.pipe.image_shape[2])
        {
            return Err(PluginError(format!(
                "checkpoint {meta:?} does not fit this instance ({} over {}, lora {:?})",
                self.pipe.family.name(),
                self.base_hash,
                self.lora_rank
            )));
        }
        self.overlay(&bytes)?;
        self.weights_hash = sha256_hex(&bytes);
        self.opt.reset();
        let b = adt_plugin_kit::read_optimizer_state(dir)?;
        self.opt.load_state_bytes(&b, &self.pipe.device)?;
        let ema = dir.join("ema.safetensors");
        if ema.is_file() {
            let (ema_meta, bytes) = read_checkpoint(&ema)?;
            if ema_meta != meta {
                return Err(PluginError(format!(
                    "{} belongs to another checkpoint ({ema_meta:?})",
                    ema.display()
                )));
            }
            let avg = adt_plugin_kit::read_like(&bytes, &self.pipe.vars, &self.pipe.device)?;
            self.opt.set_ema(avg)?;
        }
        Ok(())
    }
}
