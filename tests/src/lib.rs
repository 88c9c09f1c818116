//! Helpers for the integration tests: building the test plugins as `cdylib`s with the same
//! cargo and profile as the running test, and locating the libraries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The target directory and profile directory of the running test executable.
fn profile_dir() -> PathBuf {
    // target/<profile>/deps/<test-exe>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

/// File name of a cdylib for a crate name on this platform.
pub fn lib_name(krate: &str) -> String {
    let stem = krate.replace('-', "_");
    if cfg!(target_os = "macos") {
        format!("lib{stem}.dylib")
    } else if cfg!(windows) {
        format!("{stem}.dll")
    } else {
        format!("lib{stem}.so")
    }
}

/// The `adt-bench` executable built beside the test plugins.
pub fn adt_bench() -> PathBuf {
    build_plugins().join(if cfg!(windows) {
        "adt-bench.exe"
    } else {
        "adt-bench"
    })
}

/// Build the test plugins and the `adt-bench` binary (once per test process) and return the
/// folder holding them.
pub fn build_plugins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "adt-plugin-tiny-dylib",
            "-p",
            "adt-test-plugin-bad-abi",
            "-p",
            "adt-test-plugin-panicky",
            "-p",
            "adt-test-plugin-broken",
            "-p",
            "adt-test-plugin-abi-1-0",
            "-p",
            "adt-plugin-sd15",
            "-p",
            "adt-plugin-sdxl",
            "-p",
            "adt-plugin-sd3",
            "-p",
            "adt-plugin-samplers-dylib",
            "-p",
            "adt-test-plugin-extra-sampler",
            "-p",
            "adt-test-plugin-not-a-plugin",
            "-p",
            "adt-bench",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the test plugins");
        assert!(status.success(), "building the test plugins failed");
        dir
    })
    .clone()
}

/// `shared/fixtures/diffusers-tiny/<family>` (or `$ADT_FIXTURES/diffusers-tiny/<family>`), or
/// `None` with a loud note.
pub fn diffusers_tiny(family: &str) -> Option<PathBuf> {
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let dir = base.join("diffusers-tiny").join(family);
    if dir.join("reference.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: diffusers-tiny fixtures not found at {} (set ADT_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// The tiny random Hugging Face `Dinov2Model` of the tuner's tests as a model folder at `dir`
/// (`config.json` + `model.safetensors`): the discriminator backbone of the SD end-to-end tests.
pub fn tiny_dinov2(dir: &std::path::Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the DINOv2 folder");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tuner/tests/data/dinov2_tiny.safetensors"),
        dir.join("model.safetensors"),
    )
    .expect("copy the tiny DINOv2 weights");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "dinov2", "num_attention_heads": 2, "image_size": 12, "layer_norm_eps": 1e-6, "mlp_ratio": 4}"#,
    )
    .expect("write the tiny DINOv2 config");
    dir.to_path_buf()
}

/// The FID Inception weights (fetched once into the cache), or `None` with a loud SKIPPED.
pub fn inception() -> Option<PathBuf> {
    match adt_metrics::weights::resolve(None, adt_metrics::weights::Fetch::Auto) {
        Ok((p, _)) => Some(p),
        Err(e) => {
            eprintln!("SKIPPED: no Inception weights: {e}");
            None
        }
    }
}
