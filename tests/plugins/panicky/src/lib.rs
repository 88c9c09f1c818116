//! A model plugin that panics in `denoise` (and in `create` when its config asks), and returns
//! an ordinary error from every other call. The host must get errors, never a crash. It
//! implements sampling calls only: the training calls are the SDK's defaults ("not
//! supported") and its description says so.

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, Parameterization,
    PluginError, PluginResult, Spacing, TensorRef,
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
            trains: false,
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
    fn denoise(&mut self, _: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let v: Vec<u32> = Vec::new();
        // An out-of-bounds index: a real bug, not an explicit panic!.
        Ok(HostTensor::zeros(&[v[3] as usize]))
    }
}

adt_plugin_api::export_model_plugin!(Panicky, name = "panicky", version = "0.0.1");
