//! The built-in tiny model with two planted defects, for the conformance checks to find:
//! `denoise_vjp` returns the input cotangent with the wrong sign, and `diffusion_loss` draws
//! its noise from a call counter instead of its seed (nondeterministic under a seed). Every
//! other call is tiny's own.

use std::path::Path;

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, OptimConfig, PluginResult, StepStats,
    TensorRef,
};
use adt_plugin_tiny::TinyModel;

pub struct Broken {
    inner: TinyModel,
    calls: u64,
}

impl ModelPlugin for Broken {
    fn create(config: &serde_json::Value) -> PluginResult<Self> {
        Ok(Broken {
            inner: TinyModel::create(config)?,
            calls: 0,
        })
    }
    fn describe(&self) -> PluginResult<ModelDescription> {
        let mut d = self.inner.describe()?;
        d.name = "broken".into();
        Ok(d)
    }
    fn encode_prompts(&mut self, prompts: &[String]) -> PluginResult<u64> {
        self.inner.encode_prompts(prompts)
    }
    fn release_cond(&mut self, handle: u64) -> PluginResult<()> {
        self.inner.release_cond(handle)
    }
    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
        self.inner.encode_images(images)
    }
    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
        self.inner.decode(latents)
    }
    fn decode_vjp(
        &mut self,
        latents: TensorRef<'_>,
        cotangent: TensorRef<'_>,
    ) -> PluginResult<HostTensor> {
        self.inner.decode_vjp(latents, cotangent)
    }
    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        self.inner.denoise(args)
    }
    fn denoise_vjp(
        &mut self,
        args: &DenoiseArgs<'_>,
        cotangent: TensorRef<'_>,
        want_input_cotangent: bool,
    ) -> PluginResult<Option<HostTensor>> {
        // Defect: the input cotangent's sign.
        Ok(self
            .inner
            .denoise_vjp(args, cotangent, want_input_cotangent)?
            .map(|mut g| {
                g.data.iter_mut().for_each(|v| *v = -*v);
                g
            }))
    }
    fn diffusion_loss(
        &mut self,
        x0: TensorRef<'_>,
        cond: u64,
        _seed: u64,
        weight: f64,
    ) -> PluginResult<f64> {
        // Defect: the noise follows a call counter, not the seed.
        self.calls += 1;
        self.inner.diffusion_loss(x0, cond, self.calls, weight)
    }
    fn zero_grad(&mut self) -> PluginResult<()> {
        self.inner.zero_grad()
    }
    fn step(&mut self, config: &OptimConfig) -> PluginResult<StepStats> {
        self.inner.step(config)
    }
    fn save_state(&self, dir: &Path) -> PluginResult<()> {
        self.inner.save_state(dir)
    }
    fn load_state(&mut self, dir: &Path) -> PluginResult<()> {
        self.inner.load_state(dir)
    }
}

adt_plugin_api::export_model_plugin!(Broken, name = "broken", version = "0.0.1");
