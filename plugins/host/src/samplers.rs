//! The safe wrapper around a sampler plugin.

use adt_plugin_api::abi::{AdtBuf, SamplerApiV1};
use adt_plugin_api::buf::{str_as_abi, take_string};
use adt_plugin_api::{Plan, PlanRequest, SamplerInfo};

use crate::loader::PluginInfo;
use crate::{Error, Result, check_status};

/// A sampler plugin (stateless).
#[derive(Debug, Clone)]
pub struct Samplers {
    api: &'static SamplerApiV1,
    name: String,
}

impl Samplers {
    /// Wrap a sampler plugin.
    pub fn new(info: &PluginInfo) -> Result<Samplers> {
        let api = info
            .sampler_api()
            .ok_or_else(|| Error::Input(format!("`{}` is not a sampler plugin", info.name)))?;
        Ok(Samplers {
            api,
            name: info.name.clone(),
        })
    }

    /// The samplers it offers.
    pub fn list(&self) -> Result<Vec<SamplerInfo>> {
        let (mut out, mut err) = (AdtBuf::EMPTY, AdtBuf::EMPTY);
        // SAFETY: validated table; valid out-pointers.
        let st = unsafe { (self.api.list)(&mut out, &mut err) };
        check_status(&self.name, "list", st, err)?;
        // SAFETY: filled by a successful call.
        let s = unsafe { take_string(out) };
        serde_json::from_str(&s).map_err(|e| Error::Malformed {
            plugin: self.name.clone(),
            what: "sampler list",
            reason: e.to_string(),
        })
    }

    /// Build a plan.
    pub fn plan(&self, req: &PlanRequest) -> Result<Plan> {
        let js = serde_json::to_string(req).map_err(|e| Error::Input(e.to_string()))?;
        let (mut out, mut err) = (AdtBuf::EMPTY, AdtBuf::EMPTY);
        // SAFETY: validated table; valid pointers.
        let st = unsafe { (self.api.plan)(str_as_abi(&js), &mut out, &mut err) };
        check_status(&self.name, "plan", st, err)?;
        // SAFETY: filled by a successful call.
        let s = unsafe { take_string(out) };
        serde_json::from_str(&s).map_err(|e| Error::Malformed {
            plugin: self.name.clone(),
            what: "plan",
            reason: e.to_string(),
        })
    }
}
