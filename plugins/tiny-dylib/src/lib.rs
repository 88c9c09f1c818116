//! The built-in `tiny` model packaged as a dynamically loaded plugin: the whole `cdylib` is
//! this one line, exporting the same header (and function table) the harness links
//! statically. Build it with `cargo build --release -p adt-plugin-tiny-dylib` and load it with
//! `adt-bench --plugin-path target/release plugins list`.

adt_plugin_api::export_plugin!(adt_plugin_tiny::header);
