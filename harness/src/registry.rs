//! The plugins this binary knows: the built-ins (linked statically, registered through their
//! C headers) and libraries on the search path.

use std::path::PathBuf;

use adt_plugin_host::Registry;

/// Headers of the statically linked plugins.
pub const BUILTINS: &[fn() -> &'static adt_plugin_api::abi::PluginHeader] =
    &[adt_plugin_tiny::header, adt_plugin_samplers::header];

/// Build the registry: built-ins, then the search path (`--plugin-path`, `ADT_PLUGIN_PATH`,
/// the executable's folder).
pub fn load(plugin_path: &[PathBuf]) -> anyhow::Result<Registry> {
    let mut r = Registry::with_builtins(BUILTINS)?;
    r.scan(&adt_plugin_host::search_path(plugin_path));
    Ok(r)
}
