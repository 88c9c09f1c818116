//! The built-in samplers as a dynamically loaded plugin: `libadt_plugin_samplers_lib.so`,
//! built with the workspace's default members and found beside `adt-bench` through the same
//! loader as any user's sampler plugin.

adt_plugin_api::export_plugin!(adt_plugin_samplers::header);
