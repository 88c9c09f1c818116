//! The `sdxl` model plugin as a dynamically loaded library: the whole `cdylib` is this line,
//! exporting the header (and function table) declared in `adt-plugin-sd`. Build it with
//! `cargo build --release -p adt-plugin-sdxl`; adt-bench finds `libadt_plugin_sdxl` next to its
//! executable or on `--plugin-path` / `ADT_PLUGIN_PATH`.

adt_plugin_api::export_plugin!(adt_plugin_sd::plugin::sdxl_header);
