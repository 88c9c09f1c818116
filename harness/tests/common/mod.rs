//! What the CLI test files share: launching the binary and reading its output.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `adt-bench` binary, without colour.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adt-bench"));
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
