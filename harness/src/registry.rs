//! The plugins this binary knows: the built-in `tiny` model (linked statically, registered
//! through its C header) and the libraries on the search path — among them the samplers and
//! the SD-family models that `cargo build --release` leaves beside the executable.

use std::path::PathBuf;

use adt_plugin_host::Registry;

/// Headers of the statically linked plugins.
pub const BUILTINS: &[fn() -> &'static adt_plugin_api::abi::PluginHeader] =
    &[adt_plugin_tiny::header];

/// Build the registry: built-ins, then the search path (`--plugin-path`, `ADT_PLUGIN_PATH`,
/// the executable's folder).
pub fn load(plugin_path: &[PathBuf]) -> anyhow::Result<Registry> {
    let mut r = Registry::with_builtins(BUILTINS)?;
    r.scan(&adt_plugin_host::search_path(plugin_path));
    Ok(r)
}
