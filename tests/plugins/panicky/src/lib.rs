//! A model plugin that panics in `denoise` (and in `create` when its config asks), and returns
//! an ordinary error from every other call. The host must get errors, never a crash.

use std::path::Path;

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, OptimConfig,
    Parameterization, PluginError, PluginResult, Spacing, StepStats, TensorRef,
};

pub struct Panicky;

fn no<T>() -> PluginResult<T> {
    Err(PluginError::msg("panicky implements only describe"))
}

impl ModelPlugin for Panicky {
    fn create(config: &serde_json::Value) -> PluginResult<Self> {
        if config.get("panic_in_create").and_then(|v| v.as_bool()) == Some(true) {
            panic!("panic in create, as asked");
        }
        Ok(Panicky)
    }
    fn describe(&self) -> PluginResult<ModelDescription> {
        Ok(ModelDescription {
            name: "panicky".into(),
            family: "test".into(),
            parameterization: Parameterization::Eps,
            schedule: NoiseSchedule::Discrete {
                alphas_cumprod: vec![0.5; 10],
            },
            latent_shape: [1, 2, 2],
            image_shape: [3, 2, 2],
            parameters: 0,
            trainable_parameters: 0,
            default_guidance: 1.0,
            default_spacing: Spacing::Leading,
            sampler_default_spacing: false,
            steps_offset: 0,
            set_alpha_to_one: None,
            weights_hash: None,
            extra: serde_json::Value::Null,
        })
    }
    fn encode_prompts(&mut self, _: &[String]) -> PluginResult<u64> {
        Ok(1)
    }
    fn release_cond(&mut self, _: u64) -> PluginResult<()> {
        Ok(())
    }
    fn encode_images(&mut self, _: TensorRef<'_>) -> PluginResult<HostTensor> {
        no()
    }
    fn decode(&mut self, _: TensorRef<'_>) -> PluginResult<HostTensor> {
        no()
    }
    fn decode_vjp(&mut self, _: TensorRef<'_>, _: TensorRef<'_>) -> PluginResult<HostTensor> {
        no()
    }
    fn denoise(&mut self, _: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let v: Vec<u32> = Vec::new();
        // An out-of-bounds index: a real bug, not an explicit panic!.
        Ok(HostTensor::zeros(&[v[3] as usize]))
    }
    fn denoise_vjp(
        &mut self,
        _: &DenoiseArgs<'_>,
        _: TensorRef<'_>,
        _: bool,
    ) -> PluginResult<Option<HostTensor>> {
        no()
    }
    fn diffusion_loss(&mut self, _: TensorRef<'_>, _: u64, _: u64, _: f64) -> PluginResult<f64> {
        no()
    }
    fn zero_grad(&mut self) -> PluginResult<()> {
        Ok(())
    }
    fn step(&mut self, _: &OptimConfig) -> PluginResult<StepStats> {
        no()
    }
    fn save_state(&self, _: &Path) -> PluginResult<()> {
        no()
    }
    fn load_state(&mut self, _: &Path) -> PluginResult<()> {
        no()
    }
}

adt_plugin_api::export_model_plugin!(Panicky, name = "panicky", version = "0.0.1");
