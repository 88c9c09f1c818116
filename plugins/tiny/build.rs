//! Embeds the committed pretrained weights when they are present, so that the built-in model
//! needs no file at run time; a checkout without them still builds (random init only).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(tiny_weights)");
    println!("cargo::rerun-if-changed=weights/tiny.safetensors");
    if std::path::Path::new("weights/tiny.safetensors").exists() {
        println!("cargo::rustc-cfg=tiny_weights");
    }
}
