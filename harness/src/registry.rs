//! The plugins this binary knows: the built-in `tiny` model (linked statically, registered
//! through its C header) and the libraries on the search path — among them the samplers and
//! the SD-family models that `cargo build --release` leaves beside the executable.

use std::path::PathBuf;

use adt_plugin_host::Registry;

/// Headers of the statically linked plugins.
pub const BUILTINS: &[fn() -> &'static adt_plugin_api::abi::PluginHeader] =
    &[adt_plugin_tiny::header];

/// Environment variable that, set to `1`, leaves the executable's folder off the plugin
/// search path (as `--no-exe-dir` does).
pub const ENV_NO_EXE_DIR: &str = "ADT_PLUGIN_NO_EXE_DIR";

/// Build the registry: built-ins, then the search path (`--plugin-path`, `ADT_PLUGIN_PATH`,
/// then the executable's folder unless `--no-exe-dir` or `ADT_PLUGIN_NO_EXE_DIR=1`).
pub fn load(g: &crate::cli::GlobalOpts) -> anyhow::Result<Registry> {
    let mut r = Registry::with_builtins(BUILTINS)?;
    r.scan(&search_path(g));
    Ok(r)
}

/// The folders and files searched for plugins, in order.
pub fn search_path(g: &crate::cli::GlobalOpts) -> Vec<PathBuf> {
    let mut path = adt_plugin_host::search_path(&g.plugin_path);
    let no_exe = g.no_exe_dir || std::env::var(ENV_NO_EXE_DIR).is_ok_and(|v| v == "1");
    if no_exe
        && let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    {
        // The executable's folder is the path's last entry; an explicit entry naming the
        // same folder earlier stays.
        if path.last() == Some(&exe_dir) {
            path.pop();
        }
    }
    path
}
