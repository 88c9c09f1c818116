//! The safe wrapper around a model plugin instance.

use adt_plugin_api::abi::{AdtBuf, AdtDenoiseArgs, AdtTensor, Instance, ModelApiV1};
use adt_plugin_api::buf::{str_as_abi, take_string};
use adt_plugin_api::{HostTensor, ModelDescription, OptimConfig, StepStats};

use crate::loader::PluginInfo;
use crate::{Error, Result, check_status};

/// A conditioning handle (prompts encoded inside the plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cond(pub u64);

/// One denoiser evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Denoise<'a> {
    /// Noisy latents `[B, C, H, W]`.
    pub x: &'a HostTensor,
    /// Model time per example.
    pub t: &'a [f32],
    /// Conditioning.
    pub cond: Cond,
    /// Unconditional branch for classifier-free guidance.
    pub uncond: Option<Cond>,
    /// Guidance scale.
    pub guidance: f32,
    /// Detach the unconditional branch in `denoise_vjp`.
    pub detach_uncond: bool,
}

/// A live model instance behind the C ABI. Dropping it destroys the instance.
pub struct Model {
    api: &'static ModelApiV1,
    inst: Instance,
    name: String,
}

// SAFETY: an instance is only ever used through `&mut self` (or `&self` for describe/save, which
// the SDK contract allows), i.e. from one thread at a time; plugins must not rely on thread
// identity (documented in the plugin guide).
unsafe impl Send for Model {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).finish()
    }
}

impl Model {
    /// Create an instance of a model plugin with a JSON config.
    pub fn create(info: &PluginInfo, config: &serde_json::Value) -> Result<Model> {
        let api = info
            .model_api()
            .ok_or_else(|| Error::Input(format!("`{}` is not a model plugin", info.name)))?;
        let cfg = config.to_string();
        let mut inst: Instance = std::ptr::null_mut();
        let mut err = AdtBuf::EMPTY;
        // SAFETY: valid table from a validated header; pointers are to live locals.
        let st = unsafe { (api.create)(str_as_abi(&cfg), &mut inst, &mut err) };
        check_status(&info.name, "create", st, err)?;
        if inst.is_null() {
            return Err(Error::Malformed {
                plugin: info.name.clone(),
                what: "instance",
                reason: "null".into(),
            });
        }
        Ok(Model {
            api,
            inst,
            name: info.name.clone(),
        })
    }

    /// The plugin name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn json<T: serde::de::DeserializeOwned>(&self, what: &'static str, buf: AdtBuf) -> Result<T> {
        // SAFETY: filled by a successful call.
        let s = unsafe { take_string(buf) };
        serde_json::from_str(&s).map_err(|e| Error::Malformed {
            plugin: self.name.clone(),
            what,
            reason: e.to_string(),
        })
    }

    fn tensor(&self, what: &'static str, t: AdtTensor) -> Result<HostTensor> {
        // SAFETY: filled by a successful call.
        unsafe { HostTensor::from_abi(t) }.map_err(|e| Error::Malformed {
            plugin: self.name.clone(),
            what,
            reason: e.0,
        })
    }

    /// Describe the instance.
    pub fn describe(&self) -> Result<ModelDescription> {
        let (mut out, mut err) = (AdtBuf::EMPTY, AdtBuf::EMPTY);
        // SAFETY: live instance, valid out-pointers.
        let st = unsafe { (self.api.describe)(self.inst, &mut out, &mut err) };
        check_status(&self.name, "describe", st, err)?;
        self.json("description", out)
    }

    /// Encode prompts (one per example, or one to broadcast).
    pub fn encode_prompts(&mut self, prompts: &[String]) -> Result<Cond> {
        let js = serde_json::to_string(prompts).map_err(|e| Error::Input(e.to_string()))?;
        let mut h = 0u64;
        let mut err = AdtBuf::EMPTY;
        // SAFETY: live instance, valid pointers.
        let st = unsafe { (self.api.encode_prompts)(self.inst, str_as_abi(&js), &mut h, &mut err) };
        check_status(&self.name, "encode_prompts", st, err)?;
        Ok(Cond(h))
    }

    /// Release a conditioning handle.
    pub fn release(&mut self, c: Cond) -> Result<()> {
        let mut err = AdtBuf::EMPTY;
        // SAFETY: live instance.
        let st = unsafe { (self.api.release_cond)(self.inst, c.0, &mut err) };
        check_status(&self.name, "release_cond", st, err)
    }

    /// Images in [-1, 1] → latents.
    pub fn encode_images(&mut self, images: &HostTensor) -> Result<HostTensor> {
        let (mut out, mut err) = (AdtTensor::EMPTY, AdtBuf::EMPTY);
        let v = images.view();
        // SAFETY: `images` outlives the call.
        let st = unsafe { (self.api.encode_images)(self.inst, v.as_abi(), &mut out, &mut err) };
        check_status(&self.name, "encode_images", st, err)?;
        self.tensor("latents", out)
    }

    /// Latents → images in [-1, 1].
    pub fn decode(&mut self, latents: &HostTensor) -> Result<HostTensor> {
        let (mut out, mut err) = (AdtTensor::EMPTY, AdtBuf::EMPTY);
        let v = latents.view();
        // SAFETY: `latents` outlives the call.
        let st = unsafe { (self.api.decode)(self.inst, v.as_abi(), &mut out, &mut err) };
        check_status(&self.name, "decode", st, err)?;
        self.tensor("images", out)
    }

    /// Latent cotangent of `decode`.
    pub fn decode_vjp(
        &mut self,
        latents: &HostTensor,
        cotangent: &HostTensor,
    ) -> Result<HostTensor> {
        let (mut out, mut err) = (AdtTensor::EMPTY, AdtBuf::EMPTY);
        let (l, c) = (latents.view(), cotangent.view());
        // SAFETY: inputs outlive the call.
        let st =
            unsafe { (self.api.decode_vjp)(self.inst, l.as_abi(), c.as_abi(), &mut out, &mut err) };
        check_status(&self.name, "decode_vjp", st, err)?;
        self.tensor("latent cotangent", out)
    }

    fn args(d: &Denoise<'_>, t: &HostTensor) -> AdtDenoiseArgs {
        AdtDenoiseArgs {
            x: d.x.view().as_abi(),
            t: t.view().as_abi(),
            cond: d.cond.0,
            uncond: d.uncond.map(|c| c.0).unwrap_or(0),
            guidance: d.guidance,
            detach_uncond: d.detach_uncond as u32,
        }
    }

    /// One evaluation without gradient.
    pub fn denoise(&mut self, d: &Denoise<'_>) -> Result<HostTensor> {
        let t = HostTensor {
            shape: vec![d.t.len()],
            data: d.t.to_vec(),
        };
        let args = Self::args(d, &t);
        let (mut out, mut err) = (AdtTensor::EMPTY, AdtBuf::EMPTY);
        // SAFETY: `args` borrows `d.x` and `t`, both alive for the call.
        let st = unsafe { (self.api.denoise)(self.inst, &args, &mut out, &mut err) };
        check_status(&self.name, "denoise", st, err)?;
        self.tensor("model output", out)
    }

    /// Recompute one evaluation with gradient; accumulate J_θᵀ·cotangent; optionally return
    /// the input cotangent.
    pub fn denoise_vjp(
        &mut self,
        d: &Denoise<'_>,
        cotangent: &HostTensor,
        want_input: bool,
    ) -> Result<Option<HostTensor>> {
        let t = HostTensor {
            shape: vec![d.t.len()],
            data: d.t.to_vec(),
        };
        let args = Self::args(d, &t);
        let c = cotangent.view();
        let (mut out, mut err) = (AdtTensor::EMPTY, AdtBuf::EMPTY);
        // SAFETY: all borrowed inputs outlive the call.
        let st = unsafe {
            (self.api.denoise_vjp)(
                self.inst,
                &args,
                c.as_abi(),
                want_input as u32,
                &mut out,
                &mut err,
            )
        };
        check_status(&self.name, "denoise_vjp", st, err)?;
        if want_input {
            self.tensor("input cotangent", out).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Pre-training loss with gradient accumulation of `weight·loss`.
    pub fn diffusion_loss(
        &mut self,
        x0: &HostTensor,
        cond: Cond,
        seed: u64,
        weight: f64,
    ) -> Result<f64> {
        let mut loss = 0f64;
        let mut err = AdtBuf::EMPTY;
        let v = x0.view();
        // SAFETY: `x0` outlives the call.
        let st = unsafe {
            (self.api.diffusion_loss)(
                self.inst,
                v.as_abi(),
                cond.0,
                seed,
                weight,
                &mut loss,
                &mut err,
            )
        };
        check_status(&self.name, "diffusion_loss", st, err)?;
        Ok(loss)
    }

    /// Clear accumulated gradients.
    pub fn zero_grad(&mut self) -> Result<()> {
        let mut err = AdtBuf::EMPTY;
        // SAFETY: live instance.
        let st = unsafe { (self.api.zero_grad)(self.inst, &mut err) };
        check_status(&self.name, "zero_grad", st, err)
    }

    /// Optimizer step.
    pub fn step(&mut self, cfg: &OptimConfig) -> Result<StepStats> {
        let js = serde_json::to_string(cfg).map_err(|e| Error::Input(e.to_string()))?;
        let (mut out, mut err) = (AdtBuf::EMPTY, AdtBuf::EMPTY);
        // SAFETY: live instance, valid pointers.
        let st = unsafe { (self.api.step)(self.inst, str_as_abi(&js), &mut out, &mut err) };
        check_status(&self.name, "step", st, err)?;
        self.json("step statistics", out)
    }

    /// Save weights and optimizer state under `dir`.
    pub fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        let d = dir.to_string_lossy().into_owned();
        let mut err = AdtBuf::EMPTY;
        // SAFETY: live instance.
        let st = unsafe { (self.api.save_state)(self.inst, str_as_abi(&d), &mut err) };
        check_status(&self.name, "save_state", st, err)
    }

    /// Load what `save_state` wrote.
    pub fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        let d = dir.to_string_lossy().into_owned();
        let mut err = AdtBuf::EMPTY;
        // SAFETY: live instance.
        let st = unsafe { (self.api.load_state)(self.inst, str_as_abi(&d), &mut err) };
        check_status(&self.name, "load_state", st, err)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the instance was created by this table and is destroyed once.
        unsafe { (self.api.destroy)(self.inst) };
    }
}
