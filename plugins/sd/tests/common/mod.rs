//! Shared helpers of the parity tests against `shared/fixtures/diffusers-tiny`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use adt_plugin_sd::nn::Source;
use candle_core::{DType, Device, Tensor, Var};

/// `shared/fixtures/diffusers-tiny/<family>` (or `$ADT_FIXTURES/diffusers-tiny/<family>`), or
/// `None` with a loud note.
pub fn fixture(family: &str) -> Option<PathBuf> {
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
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

/// The reference tensors.
pub fn reference(dir: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
        .expect("reference.safetensors loads")
}

/// The reference JSON.
pub fn reference_json(dir: &std::path::Path) -> serde_json::Value {
    // Python's json writes -Infinity (diffusers' lambda_min_clipped); JSON has no such token.
    let text = std::fs::read_to_string(dir.join("reference.json"))
        .expect("reference.json")
        .replace("-Infinity", "null");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// A reference tensor by name.
pub fn r(refs: &HashMap<String, Tensor>, name: &str) -> Tensor {
    refs.get(name)
        .unwrap_or_else(|| panic!("reference lacks {name}"))
        .clone()
}

/// max|a − b| / max|b|.
pub fn rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let d = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let m = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(m > 0.0, "reference is all zeros");
    d / m
}

/// Assert `rel(a, b) <= tol`, printing the measured value.
#[track_caller]
pub fn close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel(a, b);
    eprintln!("{what}: rel {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: rel {e:.3e} > {tol:.0e}");
    assert!(e.is_finite(), "{what}: not finite");
}

/// Token ids stored as float32.
pub fn ids(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|v| v as u32).collect())
        .collect()
}

/// A component's tensors as trainable variables: the source and name → variable.
pub fn var_source(src: Source) -> (Source, HashMap<String, Var>) {
    let mut vars = HashMap::new();
    let mut tensors = HashMap::new();
    for (k, t) in src.tensors() {
        let v = Var::from_tensor(t).unwrap();
        tensors.insert(k.clone(), v.as_tensor().clone());
        vars.insert(k.clone(), v);
    }
    (Source::new(src.component().to_string(), tensors), vars)
}

/// Check a scalar sum `L = Σ out·c` against its reference relative to `Σ |out·c|` (the scale
/// of its terms): a sum with cancellation has a larger relative error than its terms.
#[track_caller]
pub fn close_sum(what: &str, out: &Tensor, c: &Tensor, want: &Tensor, tol: f64) -> Tensor {
    let prod = (out * c).unwrap();
    let loss = prod.sum_all().unwrap();
    let scale = prod
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let l = loss.to_scalar::<f32>().unwrap() as f64;
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    let e = (l - w).abs() / scale;
    eprintln!("{what}: {l} vs {w}, |diff| / sum|terms| {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: {e:.3e} > {tol:.0e}");
    loss
}
