//! placeholder
use adt_plugin_api::{Plan, PlanRequest, PluginError, PluginResult, SamplerInfo, SamplerPlugin};
pub struct Builtin;
impl SamplerPlugin for Builtin {
    fn list() -> Vec<SamplerInfo> {
        vec![]
    }
    fn plan(_r: &PlanRequest) -> PluginResult<Plan> {
        Err(PluginError::msg("todo"))
    }
}
adt_plugin_api::declare_sampler_plugin!(pub fn header, Builtin, name = "builtin-samplers", version = env!("CARGO_PKG_VERSION"));
