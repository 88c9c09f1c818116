//! A model plugin built against the SDK as it was at ABI 1.0 (`../sdk`, a verbatim copy):
//! every call must be written, and the description lacks the fields later minors added. It
//! scales its input (`denoise` = 0.5·x, or guided: u + g·(c − u) of the same), enough for a
//! host to create, describe and drive it.

use std::path::Path;

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, OptimConfig,
    Parameterization, PluginError, PluginResult, Spacing, StepStats, TensorRef,
};

pub struct Old;

fn no<T>() -> PluginResult<T> {
    Err(PluginError::msg("this 1.0 test plugin does not train"))
}

impl ModelPlugin for Old {
    fn create(_: &serde_json::Value) -> PluginResult<Self> {
        Ok(Old)
    }
    fn describe(&self) -> PluginResult<ModelDescription> {
        Ok(ModelDescription {
            name: "abi-1-0".into(),
            family: "test".into(),
            parameterization: Parameterization::Eps,
            schedule: NoiseSchedule::Discrete {
                alphas_cumprod: (0..100).map(|i| 1.0 - 0.009 * i as f64).collect(),
            },
            latent_shape: [3, 4, 4],
            image_shape: [3, 4, 4],
            parameters: 0,
            trainable_parameters: 0,
            default_guidance: 1.0,
            default_spacing: Spacing::Leading,
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
    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
        Ok(images.to_owned())
    }
    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
        Ok(latents.to_owned())
    }
    fn decode_vjp(&mut self, _: TensorRef<'_>, _: TensorRef<'_>) -> PluginResult<HostTensor> {
        no()
    }
    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let mut y = args.x.to_owned();
        y.data.iter_mut().for_each(|v| *v *= 0.5);
        Ok(y)
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
        no()
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

adt_plugin_api::export_model_plugin!(Old, name = "abi-1-0", version = "1.0.0");
