//! The `sd15` model plugin as a dynamically loaded library: the whole `cdylib` is this line,
//! exporting the header (and function table) declared in `adt-plugin-sd`. Build it with
//! `cargo build --release -p adt-plugin-sd15`; adt-bench finds `libadt_plugin_sd15` next to its
//! executable or on `--plugin-path` / `ADT_PLUGIN_PATH`.

adt_plugin_api::export_plugin!(adt_plugin_sd::plugin::sd15_header);
