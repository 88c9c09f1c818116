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

/// Check every reference gradient `grad.<component>.param.<name>` against the gradient of the
/// variable `<name>` in `grads` (rel ≤ 5e-5, the fixture's tolerance); returns how many.
pub fn check_param_grads(
    refs: &HashMap<String, Tensor>,
    component: &str,
    vars: &HashMap<String, Var>,
    grads: &candle_core::backprop::GradStore,
) -> usize {
    let prefix = format!("grad.{component}.param.");
    let mut n = 0;
    for (name, want) in refs {
        if let Some(p) = name.strip_prefix(&prefix) {
            let v = vars.get(p).unwrap_or_else(|| panic!("no parameter {p}"));
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {p}"));
            close(name, g, want, 5e-5);
            n += 1;
        }
    }
    n
}

/// The VAE of a fixture pipeline against diffusers: decoder input (scale, shift), decode and its
/// postprocessed image, encode (mean, std, pipeline latent), and the decoder's parameter and
/// input gradients of L = Σ decode(z)·c. Every file tensor must be used.
pub fn check_vae(dir: &std::path::Path) {
    use adt_plugin_sd::load;
    use adt_plugin_sd::vae::{Vae, VaeConfig};
    let refs = reference(dir);
    let v = dir.join("vae");
    let cfg: VaeConfig = load::config(&v).unwrap();
    let (src, vars) = var_source(load::source(&v, "vae", None, DType::F32, &Device::Cpu).unwrap());
    let vae = Vae::load(&src.root(), &cfg).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused vae tensors: {:?}",
        src.unused()
    );
    let lat = r(&refs, "vae.decode.latent");
    close(
        "vae.decode.z",
        &vae.to_decoder_space(&lat).unwrap(),
        &r(&refs, "vae.decode.z"),
        1e-6,
    );
    let out = vae.decode(&lat).unwrap();
    close("vae.decode.out", &out, &r(&refs, "vae.decode.out"), 2e-5);
    let img = ((out / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    close(
        "vae.decode.image",
        &img,
        &r(&refs, "vae.decode.image"),
        2e-5,
    );
    let (mean, std) = vae.encode_dist(&r(&refs, "vae.encode.image")).unwrap();
    close("vae.encode.mean", &mean, &r(&refs, "vae.encode.mean"), 2e-5);
    close("vae.encode.std", &std, &r(&refs, "vae.encode.std"), 2e-5);
    let scaled = vae.to_pipeline_space(&mean).unwrap();
    close(
        "vae.encode.latent_scaled",
        &scaled,
        &r(&refs, "vae.encode.latent_scaled"),
        2e-5,
    );
    let zv = Var::from_tensor(&r(&refs, "vae.decode.z")).unwrap();
    let out = vae.decode_raw(zv.as_tensor()).unwrap();
    let c = r(&refs, "grad.vae.cotangent");
    let loss = close_sum("grad.vae.loss", &out, &c, &r(&refs, "grad.vae.loss"), 1e-6);
    let grads = loss.backward().unwrap();
    let n = check_param_grads(&refs, "vae", &vars, &grads);
    assert!(n >= 9, "only {n} decoder parameter gradients");
    close(
        "grad.vae.z",
        grads.get(zv.as_tensor()).unwrap(),
        &r(&refs, "grad.vae.z"),
        5e-5,
    );
}

/// Copy a folder recursively, leaving out the fixture's reference files.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else if !e.file_name().to_string_lossy().starts_with("reference") {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The fixture's image size `[height, width]` (`reference.json` → `image_size_hw`).
pub fn image_hw(json: &serde_json::Value) -> [usize; 2] {
    let hw = json["image_size_hw"]
        .as_array()
        .expect("reference.json has image_size_hw");
    let v = |i: usize| hw[i].as_u64().expect("image_size_hw holds integers") as usize;
    [v(0), v(1)]
}
