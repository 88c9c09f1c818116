//! What the CLI test files share: launching the binary and reading its output.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `adt-bench` binary, without colour, with the sampler plugin library it ships with
/// built beside it (`cargo test -p adt-bench` alone does not build the workspace's cdylibs).
pub fn bin() -> Command {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_adt-bench"));
    BUILT.get_or_init(|| {
        let release = exe
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut b = Command::new(cargo);
        b.args(["build", "--quiet", "-p", "adt-plugin-samplers-dylib"]);
        if release {
            b.arg("--release");
        }
        let ok = b.status().is_ok_and(|s| s.success());
        assert!(ok, "building the sampler plugin library failed");
    });
    let mut c = Command::new(exe);
    c.env("NO_COLOR", "1");
    c
}

/// Run `adt-bench ARGS`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run adt-bench")
}

/// Run with the Inception weights `w` and a private statistics cache.
pub fn run_with_weights(cache: &Path, w: &Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .env("ADT_CACHE_DIR", cache)
        .env("ADT_INCEPTION_WEIGHTS", w)
        .output()
        .expect("run adt-bench")
}

/// stdout then stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The FID Inception weights (fetched once into the cache), or None with a loud SKIPPED.
pub fn weights() -> Option<PathBuf> {
    match adt_metrics::weights::resolve(None, adt_metrics::weights::Fetch::Auto) {
        Ok((p, _)) => Some(p),
        Err(e) => {
            eprintln!("SKIPPED: no Inception weights: {e}");
            None
        }
    }
}
