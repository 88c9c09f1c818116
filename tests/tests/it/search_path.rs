//! Plugin discovery as users configure it: `--plugin-path` before `ADT_PLUGIN_PATH` before the
//! executable's folder, and a plugin failure inside a real command.

use std::path::Path;
use std::process::Command;

use adt_integration_tests::{adt_bench, build_plugins, lib_name};

fn copy_panicky(dir: &Path) {
    let src = build_plugins().join(lib_name("adt-test-plugin-panicky"));
    std::fs::copy(src, dir.join(lib_name("adt-plugin-test-panicky"))).unwrap();
}

#[test]
fn plugin_path_takes_precedence_over_the_environment() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_panicky(first.path());
    copy_panicky(second.path());
    let out = Command::new(adt_bench())
        .args([
            "--plugin-path",
            first.path().to_str().unwrap(),
            "plugins",
            "list",
            "--json",
        ])
        .env("ADT_PLUGIN_PATH", second.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let panicky: Vec<&serde_json::Value> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["plugin"]["name"] == "panicky")
        .collect();
    assert_eq!(panicky.len(), 1, "the same plugin twice is registered once");
    let source = panicky[0]["plugin"]["source"]["library"].as_str().unwrap();
    assert!(
        source.starts_with(first.path().to_str().unwrap()),
        "{source}"
    );

    // With only the environment variable, the plugin is found there.
    let out = Command::new(adt_bench())
        .args(["plugins", "list"])
        .env("ADT_PLUGIN_PATH", second.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("panicky") && l.contains(second.path().to_str().unwrap())),
        "{text}"
    );
}

#[test]
fn a_panicking_plugin_fails_the_command_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    copy_panicky(dir.path());
    let out = Command::new(adt_bench())
        .args([
            "--plugin-path",
            dir.path().to_str().unwrap(),
            "sample",
            "--model",
            "panicky",
            "--sampler",
            "ddim:2",
            "-n",
            "1",
        ])
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // An ordinary error exit (code 1), not a signal or an abort.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("plugin `panicky` panicked in denoise"),
        "{err}"
    );
}

/// An inference-only plugin (the SDK's default training calls): `run` refuses to tune it
/// before any work, naming the calls it lacks, and plans it untuned.
#[test]
fn run_refuses_to_tune_an_inference_only_plugin() {
    let dir = tempfile::tempdir().unwrap();
    copy_panicky(dir.path());
    let plan = |methods: &str| {
        Command::new(adt_bench())
            .args([
                "--plugin-path",
                dir.path().to_str().unwrap(),
                "run",
                "--plan",
            ])
            .args(["--models", "panicky", "--methods", methods])
            .args(["--eval-samplers", "ddim:2", "--train-samplers", "ddim:2"])
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap()
    };
    let out = plan("base,ft,adt");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("inference-only plugin")
            && err.contains("denoise_vjp")
            && err.contains("diffusion_loss")
            && err.contains("ft, adt")
            && err.contains("--methods base"),
        "{err}"
    );
    let out = plan("base");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
