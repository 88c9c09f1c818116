//! Shared helpers: the fixtures folder and the Inception weights.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use adt_metrics::weights::{Fetch, resolve};
use adt_metrics::{Inception, InceptionWeights};

/// `../shared/fixtures/NAME` (or `$ADT_FIXTURES/NAME`) when it holds `marker`, else `None`
/// with a loud note.
pub fn fixture(name: &str, marker: &str) -> Option<PathBuf> {
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = base.join(name);
    if p.join(marker).exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {name} fixtures not found at {} (set ADT_FIXTURES)",
            p.display()
        );
        None
    }
}

/// `../shared/fixtures/fid` (or `$ADT_FIXTURES/fid`), or `None` with a loud note.
pub fn fid_fixtures() -> Option<PathBuf> {
    fixture("fid", "reference.json")
}

/// The network, loaded once per test binary (fetched into the cache on first use).
pub fn inception() -> Option<&'static Inception> {
    static NET: OnceLock<Option<Inception>> = OnceLock::new();
    NET.get_or_init(|| match resolve(None, Fetch::Auto) {
        Ok((path, _)) => {
            let w = InceptionWeights::load(&path).expect("weights load");
            Some(Inception::new(&w))
        }
        Err(e) => {
            eprintln!("SKIPPED: no Inception weights: {e}");
            None
        }
    })
    .as_ref()
}

/// Read a `[rows, cols]` f32 tensor from a safetensors file.
pub fn read_f32(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

/// The fixture images of one folder, in file order.
pub fn images(dir: &std::path::Path) -> Vec<(String, image::RgbImage)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                image::open(&p).unwrap().to_rgb8(),
            )
        })
        .collect()
}
