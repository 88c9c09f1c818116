//! `tiny`: the built-in model plugin. A small pixel-space UNet (32×32 RGB, ~1M parameters)
//! with word-level text conditioning, v-prediction on a 1000-step cosine schedule with zero
//! terminal SNR, and AdamW — every model call of the plugin ABI, differentiable end to end.
//!
//! It is linked into `adt-bench` statically through the very same function table a dynamic
//! plugin exports ([`header`]); `plugins/tiny-dylib` packages it as a `cdylib`, which is the
//! worked example of the plugin author's guide.
//!
//! Must not depend on any adt-bench crate other than `adt-plugin-api`.

#![forbid(unsafe_code)]

pub mod conv;
pub mod net;
pub mod ops;
pub mod schedule;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, OptimConfig,
    Parameterization, PluginError, PluginResult, Spacing, StepStats, TensorRef,
};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub use adt_plugin_kit::canonical_safetensors;
use adt_plugin_kit::{Handles, Trainer, err, sha256_hex, write_atomic};
use net::{Params, TinyConfig};

#[cfg(not(feature = "cuda"))]
adt_plugin_api::declare_model_plugin!(pub fn header, TinyModel, name = "tiny", version = env!("CARGO_PKG_VERSION"));
#[cfg(feature = "cuda")]
adt_plugin_api::declare_model_plugin!(pub fn header, TinyModel, name = "tiny", version = env!("CARGO_PKG_VERSION"), features = "[\"cpu\",\"cuda\"]");

/// The pretrained weights committed to the repository (f16 safetensors), when present.
#[cfg(tiny_weights)]
pub const EMBEDDED_WEIGHTS: Option<&[u8]> = Some(include_bytes!("../weights/tiny.safetensors"));
/// The pretrained weights committed to the repository, when present.
#[cfg(not(tiny_weights))]
pub const EMBEDDED_WEIGHTS: Option<&[u8]> = None;

/// Format tag written into the weights' metadata.
pub const FORMAT: &str = "adt-tiny-v1";

/// Instance configuration (the JSON passed to `create`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConfig {
    /// `builtin` (default: the embedded pretrained weights), `random`, or a path to a
    /// `.safetensors` file or to a directory holding `model.safetensors`.
    #[serde(default)]
    weights: Option<String>,
    /// Seed of the random initialisation (`weights = "random"`).
    #[serde(default)]
    seed: u64,
    /// `cpu` (default) or `cuda[:N]`.
    #[serde(default)]
    device: Option<String>,
    /// Architecture, only with `weights = "random"`.
    #[serde(default)]
    arch: Option<TinyConfig>,
}

/// The tiny model instance.
pub struct TinyModel {
    cfg: TinyConfig,
    params: Params,
    device: Device,
    conds: Handles<Tensor>,
    opt: Trainer,
    alphas_cumprod: Vec<f64>,
    weights_hash: Option<String>,
}

/// Read tiny weights from safetensors bytes (f32, f16 or bf16) and check them against the
/// architecture in the metadata.
pub fn params_from_bytes(bytes: &[u8], device: &Device) -> PluginResult<(TinyConfig, Params)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| PluginError(format!("not a safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        other => {
            return Err(PluginError(format!(
                "these are not tiny-model weights (format {:?}, expected {FORMAT:?})",
                other.unwrap_or("missing")
            )));
        }
    }
    let cfg: TinyConfig =
        serde_json::from_str(meta.get("config").map(String::as_str).unwrap_or(""))
            .map_err(|e| PluginError(format!("weights metadata has no valid `config`: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| PluginError(format!("corrupt safetensors: {e}")))?;
    // The config is the file's word: it must describe exactly the scalars the file holds
    // before the layout it describes is allocated.
    let need = Params::count_for(&cfg).ok_or_else(|| {
        PluginError(format!(
            "weights metadata `config` {cfg:?} is not a tiny architecture"
        ))
    })?;
    let have = st
        .tensors()
        .iter()
        .map(|(_, v)| {
            v.shape()
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        })
        .try_fold(0u64, |a, n| a.checked_add(n?));
    if have != Some(need) {
        return Err(PluginError(format!(
            "weights metadata `config` describes {need} parameters, the file holds {}",
            have.map_or_else(|| "more than can be counted".into(), |h| h.to_string())
        )));
    }
    // Build the expected layout, then fill it from the file, checking every name and shape.
    let mut params = Params::init(&cfg, 0, device).map_err(err)?;
    for (name, var) in params.vars.iter_mut() {
        let view = st
            .tensor(name)
            .map_err(|_| PluginError(format!("weights lack tensor `{name}`")))?;
        let t = candle_core::safetensors::Load::load(&view, device)
            .map_err(err)?
            .to_dtype(DType::F32)
            .map_err(err)?;
        if t.dims() != var.dims() {
            return Err(PluginError(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        *var = Var::from_tensor(&t).map_err(err)?;
    }
    let extra: Vec<_> = st
        .names()
        .into_iter()
        .filter(|n| !params.vars.contains_key(*n))
        .map(str::to_string)
        .collect();
    if !extra.is_empty() {
        return Err(PluginError(format!(
            "weights hold unknown tensors: {extra:?}"
        )));
    }
    Ok((cfg, params))
}

/// Serialize parameters to safetensors bytes (f32 or f16) with the architecture in metadata.
pub fn params_to_bytes(cfg: &TinyConfig, params: &Params, half: bool) -> PluginResult<Vec<u8>> {
    tensors_to_bytes(
        cfg,
        params.vars.iter().map(|(n, v)| (n, v.as_tensor())),
        half,
    )
}

/// [`params_to_bytes`] of named tensors (the moving average of the weights).
fn tensors_to_bytes<'a>(
    cfg: &TinyConfig,
    named: impl Iterator<Item = (&'a String, &'a Tensor)>,
    half: bool,
) -> PluginResult<Vec<u8>> {
    let mut tensors = Vec::new();
    for (name, t) in named {
        let t = if half {
            t.to_dtype(DType::F16)
        } else {
            Ok(t.clone())
        }
        .map_err(err)?;
        tensors.push((name.clone(), t));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("config".to_string(), serde_json::to_string(cfg)?);
    adt_plugin_kit::serialize(&tensors, meta)
}

impl TinyModel {
    fn tensor(&self, t: TensorRef<'_>) -> PluginResult<Tensor> {
        Tensor::from_slice(t.data, t.shape, &self.device).map_err(err)
    }

    fn host(t: &Tensor) -> PluginResult<HostTensor> {
        adt_plugin_kit::to_host(t)
    }

    fn check_image(&self, x: TensorRef<'_>, what: &str) -> PluginResult<()> {
        let s = self.cfg.size;
        if x.shape.len() != 4 || x.shape[1] != 3 || x.shape[2] != s || x.shape[3] != s {
            return Err(PluginError(format!(
                "{what} must be [B, 3, {s}, {s}], got {:?}",
                x.shape
            )));
        }
        Ok(())
    }

    /// Text embedding for a handle, repeated to batch `b` if it holds a single prompt.
    fn text(&self, handle: u64, b: usize) -> PluginResult<Tensor> {
        let ids = self.conds.get(handle)?;
        let n = ids.dim(0).map_err(err)?;
        let emb = net::text_embedding(&self.params, ids).map_err(err)?;
        match n {
            _ if n == b => Ok(emb),
            1 => emb
                .broadcast_as((b, emb.dim(1).map_err(err)?))
                .and_then(|t| t.contiguous())
                .map_err(err),
            _ => Err(PluginError(format!(
                "conditioning holds {n} prompts for a batch of {b}"
            ))),
        }
    }

    /// The (guided) model output as a candle tensor (with graph when the params are tracked).
    fn output(&self, args: &DenoiseArgs<'_>, x: &Tensor) -> PluginResult<Tensor> {
        self.check_image(args.x, "x")?;
        let b = args.x.shape[0];
        if args.t.len() != b {
            return Err(PluginError(format!(
                "t holds {} values for a batch of {b}",
                args.t.len()
            )));
        }
        let t = Tensor::from_slice(args.t, b, &self.device).map_err(err)?;
        let cond = self.text(args.cond, b)?;
        match args.uncond {
            None => net::forward(&self.params, &self.cfg, x, &t, &cond).map_err(err),
            Some(u) => {
                let unc = self.text(u, b)?;
                let xx = Tensor::cat(&[x, x], 0).map_err(err)?;
                let tt = Tensor::cat(&[&t, &t], 0).map_err(err)?;
                let cc = Tensor::cat(&[&cond, &unc], 0).map_err(err)?;
                let out = net::forward(&self.params, &self.cfg, &xx, &tt, &cc).map_err(err)?;
                let c = out.narrow(0, 0, b).map_err(err)?;
                let mut un = out.narrow(0, b, b).map_err(err)?;
                if args.detach_uncond {
                    un = un.detach();
                }
                // u + g (c − u)
                let diff = (c - &un).map_err(err)?;
                (un + (diff * args.guidance as f64).map_err(err)?).map_err(err)
            }
        }
    }

    fn accumulate(&mut self, grads: &candle_core::backprop::GradStore) -> PluginResult<()> {
        self.opt.accumulate(&self.params.vars, grads)
    }

    /// The architecture in use.
    pub fn config(&self) -> &TinyConfig {
        &self.cfg
    }

    /// Parameters (for tests and weight export).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Gradient accumulated for one parameter (for tests).
    pub fn grad(&self, name: &str) -> Option<HostTensor> {
        self.opt.grad(name).and_then(|g| Self::host(g).ok())
    }
}

impl ModelPlugin for TinyModel {
    fn create(config: &serde_json::Value) -> PluginResult<Self> {
        let c: CreateConfig = serde_json::from_value(config.clone())
            .map_err(|e| PluginError(format!("invalid tiny model config: {e}")))?;
        let device = adt_plugin_kit::device(c.device.as_deref())?;
        let (cfg, params, hash) = match c.weights.as_deref().unwrap_or("builtin") {
            "random" => {
                let cfg = c.arch.clone().unwrap_or_default();
                // Checked before anything is allocated: 2³¹ scalars (8 GiB in f32) at most.
                match Params::count_for(&cfg) {
                    Some(n) if n <= 1 << 31 => {}
                    n => {
                        return Err(PluginError(format!(
                            "arch {cfg:?} describes {} parameters; at most 2^31",
                            n.map_or_else(|| "too many".into(), |n| n.to_string())
                        )));
                    }
                }
                let p = Params::init(&cfg, c.seed, &device).map_err(err)?;
                (cfg, p, None)
            }
            "builtin" => {
                let bytes = EMBEDDED_WEIGHTS.ok_or_else(|| {
                    PluginError::msg(
                        "this build has no embedded tiny weights (plugins/tiny/weights/tiny.safetensors); \
                         run `adt-bench pretrain --model tiny` or pass weights=random",
                    )
                })?;
                let (cfg, p) = params_from_bytes(bytes, &device)?;
                (cfg, p, Some(sha256_hex(bytes)))
            }
            path => {
                let mut p = PathBuf::from(path);
                if p.is_dir() {
                    p = p.join("model.safetensors");
                }
                let bytes = std::fs::read(&p).map_err(|e| {
                    PluginError(format!("cannot read weights {}: {e}", p.display()))
                })?;
                let (cfg, params) = params_from_bytes(&bytes, &device)
                    .map_err(|e| PluginError(format!("{}: {}", p.display(), e.0)))?;
                (cfg, params, Some(sha256_hex(&bytes)))
            }
        };
        if c.arch.is_some() && c.weights.as_deref() != Some("random") {
            return Err(PluginError::msg(
                "`arch` is only allowed with weights=random (weights carry their own)",
            ));
        }
        Ok(TinyModel {
            cfg,
            params,
            device,
            conds: Handles::default(),
            opt: Trainer::new(),
            alphas_cumprod: schedule::alphas_cumprod(),
            weights_hash: hash,
        })
    }

    fn describe(&self) -> PluginResult<ModelDescription> {
        let s = self.cfg.size;
        let n = self.params.count();
        Ok(ModelDescription {
            name: "tiny".into(),
            family: "tiny".into(),
            parameterization: Parameterization::V,
            schedule: NoiseSchedule::Discrete {
                alphas_cumprod: self.alphas_cumprod.clone(),
            },
            latent_shape: [3, s, s],
            image_shape: [3, s, s],
            parameters: n,
            trainable_parameters: n,
            default_guidance: 2.0,
            default_spacing: Spacing::Trailing,
            sampler_default_spacing: false,
            steps_offset: 0,
            set_alpha_to_one: Some(true),
            weights_hash: self.weights_hash.clone(),
            trains: true,
            extra: serde_json::json!({ "arch": self.cfg, "device": format!("{:?}", self.device) }),
        })
    }

    fn encode_prompts(&mut self, prompts: &[String]) -> PluginResult<u64> {
        if prompts.is_empty() {
            return Err(PluginError::msg("no prompts"));
        }
        let ids: Vec<u32> = prompts
            .iter()
            .flat_map(|p| tokenizer::tokenize(p))
            .collect();
        let t = Tensor::from_vec(ids, (prompts.len(), tokenizer::MAX_TOKENS), &self.device)
            .map_err(err)?;
        Ok(self.conds.insert(t))
    }

    fn release_cond(&mut self, handle: u64) -> PluginResult<()> {
        self.conds.remove(handle)
    }

    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
        self.check_image(images, "images")?;
        Ok(images.to_owned())
    }

    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
        self.check_image(latents, "latents")?;
        Ok(latents.to_owned())
    }

    fn decode_vjp(
        &mut self,
        latents: TensorRef<'_>,
        cotangent: TensorRef<'_>,
    ) -> PluginResult<HostTensor> {
        self.check_image(latents, "latents")?;
        if latents.shape != cotangent.shape {
            return Err(PluginError::msg("cotangent shape differs from latents"));
        }
        Ok(cotangent.to_owned())
    }

    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let x = self.tensor(args.x)?;
        // No gradient here: build no autograd graph (tracking is restored on every path).
        self.params.track = false;
        let out = self.output(args, &x);
        self.params.track = true;
        Self::host(&out?)
    }

    fn denoise_vjp(
        &mut self,
        args: &DenoiseArgs<'_>,
        cotangent: TensorRef<'_>,
        want_input_cotangent: bool,
    ) -> PluginResult<Option<HostTensor>> {
        if cotangent.shape != args.x.shape {
            return Err(PluginError(format!(
                "cotangent shape {:?} differs from x {:?}",
                cotangent.shape, args.x.shape
            )));
        }
        let xv = Var::from_tensor(&self.tensor(args.x)?).map_err(err)?;
        let x = if want_input_cotangent {
            xv.as_tensor().clone()
        } else {
            xv.as_tensor().detach()
        };
        let out = self.output(args, &x)?;
        let c = self.tensor(cotangent)?;
        let l = (out * c).and_then(|t| t.sum_all()).map_err(err)?;
        let grads = l.backward().map_err(err)?;
        self.accumulate(&grads)?;
        if want_input_cotangent {
            let g = match grads.get(xv.as_tensor()) {
                Some(g) => Self::host(g)?,
                None => HostTensor::zeros(args.x.shape),
            };
            Ok(Some(g))
        } else {
            Ok(None)
        }
    }

    fn diffusion_loss(
        &mut self,
        x0: TensorRef<'_>,
        cond: u64,
        seed: u64,
        weight: f64,
    ) -> PluginResult<f64> {
        self.check_image(x0, "x0")?;
        let b = x0.shape[0];
        let n = x0.data.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ts: Vec<usize> = (0..b)
            .map(|_| rng.random_range(0..schedule::NUM_TRAIN_TIMESTEPS))
            .collect();
        let eps: Vec<f32> = (0..n)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let per = n / b;
        let mut xt = vec![0f32; n];
        let mut v = vec![0f32; n];
        for (i, &t) in ts.iter().enumerate() {
            let a = self.alphas_cumprod[t].sqrt() as f32;
            let s = (1.0 - self.alphas_cumprod[t]).sqrt() as f32;
            for j in i * per..(i + 1) * per {
                xt[j] = a * x0.data[j] + s * eps[j];
                v[j] = a * eps[j] - s * x0.data[j];
            }
        }
        let shape = x0.shape;
        let xt = Tensor::from_vec(xt, shape, &self.device).map_err(err)?;
        let v = Tensor::from_vec(v, shape, &self.device).map_err(err)?;
        let t: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let t = Tensor::from_vec(t, b, &self.device).map_err(err)?;
        let text = self.text(cond, b)?;
        let pred = net::forward(&self.params, &self.cfg, &xt, &t, &text).map_err(err)?;
        let loss = (pred - v)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .map_err(err)?;
        let value = loss.to_scalar::<f32>().map_err(err)? as f64;
        if weight != 0.0 {
            let grads = (loss * weight).and_then(|l| l.backward()).map_err(err)?;
            self.accumulate(&grads)?;
        }
        Ok(value)
    }

    fn zero_grad(&mut self) -> PluginResult<()> {
        self.opt.zero_grad();
        Ok(())
    }

    fn step(&mut self, c: &OptimConfig) -> PluginResult<StepStats> {
        self.opt.step(&self.params.vars, c)
    }

    fn save_state(&self, dir: &Path) -> PluginResult<()> {
        write_atomic(
            dir,
            "model.safetensors",
            &params_to_bytes(&self.cfg, &self.params, false)?,
        )?;
        if !self.opt.ema().is_empty() {
            write_atomic(
                dir,
                "ema.safetensors",
                &tensors_to_bytes(&self.cfg, self.opt.ema().iter(), false)?,
            )?;
        }
        write_atomic(dir, "optimizer.safetensors", &self.opt.state_bytes()?)
    }

    fn load_state(&mut self, dir: &Path) -> PluginResult<()> {
        let p = dir.join("model.safetensors");
        let bytes = std::fs::read(&p)
            .map_err(|e| PluginError(format!("cannot read {}: {e}", p.display())))?;
        let (cfg, params) = params_from_bytes(&bytes, &self.device)?;
        if cfg != self.cfg {
            return Err(PluginError(format!(
                "checkpoint architecture {cfg:?} differs from the instance's {:?}",
                self.cfg
            )));
        }
        self.params = params;
        self.weights_hash = Some(sha256_hex(&bytes));
        self.opt.reset();
        let bytes = adt_plugin_kit::read_optimizer_state(dir)?;
        self.opt.load_state_bytes(&bytes, &self.device)?;
        let ema = dir.join("ema.safetensors");
        if ema.is_file() {
            let bytes = std::fs::read(&ema)
                .map_err(|e| PluginError(format!("cannot read {}: {e}", ema.display())))?;
            let (cfg, _) = params_from_bytes(&bytes, &self.device)?;
            if cfg != self.cfg {
                return Err(PluginError(format!(
                    "{}: architecture {cfg:?} differs from the instance's {:?}",
                    ema.display(),
                    self.cfg
                )));
            }
            let avg = adt_plugin_kit::read_like(&bytes, &self.params.vars, &self.device)?;
            self.opt.set_ema(avg)?;
        }
        Ok(())
    }
}
