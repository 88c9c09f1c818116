//! `adt-bench fid` and `adt-bench bench inception` as users run them, on the FID fixtures.

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixtures() -> Option<PathBuf> {
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = base.join("fid");
    if p.join("reference.json").exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: FID fixtures not found at {}", p.display());
        None
    }
}

use crate::common::{run_with_weights as run, text, weights};

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn fid_of_two_folders_matches_clean_fid_then_comes_from_the_cache() {
    let (Some(fx), Some(w)) = (fixtures(), weights()) else {
        return;
    };
    let refj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("reference.json")).unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = (fx.join("images/a"), fx.join("images/b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let first = json(&run(cache.path(), &w, &["fid", a, b, "--json", "--quiet"]));
    let want = refj["fid"]["images.clean.scipy_sqrtm"].as_f64().unwrap();
    let got = first["fid"].as_f64().unwrap();
    assert!((got - want).abs() < 0.05, "{got} vs {want}");
    assert_eq!(first["mode"], "clean");
    assert_eq!(first["a"]["cached"], false);
    assert!(
        first["warnings"][0]
            .as_str()
            .unwrap()
            .contains("rank-deficient"),
        "{first}"
    );
    let again = json(&run(cache.path(), &w, &["fid", a, b, "--json"]));
    assert_eq!(again["a"]["cached"], true);
    assert_eq!(
        again["fid"], first["fid"],
        "cached statistics give the same number"
    );

    // pytorch-fid mode is a different pipeline and a different number.
    let pt = json(&run(
        cache.path(),
        &w,
        &["fid", a, b, "--json", "--mode", "pytorch-fid"],
    ));
    let want = refj["fid"]["images.pytorch_fid.scipy_sqrtm"]
        .as_f64()
        .unwrap();
    assert!((pt["fid"].as_f64().unwrap() - want).abs() < 0.05, "{pt}");

    // Saved statistics give the same FID, and carry features for KID.
    let npz = cache.path().join("a.npz");
    let o = run(
        cache.path(),
        &w,
        &["fid", a, "--save-stats", npz.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let from_npz = json(&run(
        cache.path(),
        &w,
        &["fid", npz.to_str().unwrap(), b, "--json", "--kid"],
    ));
    assert!(
        (from_npz["fid"].as_f64().unwrap() - got).abs() < 1e-9,
        "{from_npz}"
    );
    assert!(from_npz["kid"]["kid"].as_f64().unwrap() > 0.0);
    // A mode mismatch with a file that records its mode is refused.
    let o = run(
        cache.path(),
        &w,
        &["fid", npz.to_str().unwrap(), b, "--mode", "tf-legacy"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("mode `clean`"), "{}", text(&o));
}

#[test]
fn bad_images_stop_with_the_file_named_or_are_skipped_and_counted() {
    let (Some(fx), Some(w)) = (fixtures(), weights()) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("nested");
    std::fs::create_dir_all(&sub).unwrap();
    for n in ["01.png", "04.png", "07.png"] {
        std::fs::copy(fx.join("images/a").join(n), sub.join(n)).unwrap();
    }
    let bytes = std::fs::read(fx.join("images/a/02.png")).unwrap();
    std::fs::write(dir.path().join("truncated.png"), &bytes[..bytes.len() / 3]).unwrap();
    let d = dir.path().to_str().unwrap();
    let b = fx.join("images/b");
    let o = run(cache.path(), &w, &["fid", d, b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("truncated.png"), "{}", text(&o));
    let o = run(
        cache.path(),
        &w,
        &["fid", d, b.to_str().unwrap(), "--skip-bad", "--json"],
    );
    let v = json(&o);
    assert_eq!(v["a"]["n"], 3, "the nested folder is searched: {v}");
    assert!(
        v["warnings"].to_string().contains("skipped 1 bad image"),
        "{v}"
    );
    // The statistics cached under --skip-bad do not answer for a run without it.
    let o = run(cache.path(), &w, &["fid", d, b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("truncated.png"), "{}", text(&o));

    // Empty folder, one image.
    let empty = tempfile::tempdir().unwrap();
    let o = run(
        cache.path(),
        &w,
        &["fid", empty.path().to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("holds no images"), "{}", text(&o));
    let one = tempfile::tempdir().unwrap();
    std::fs::copy(fx.join("images/a/01.png"), one.path().join("x.png")).unwrap();
    let o = run(
        cache.path(),
        &w,
        &["fid", one.path().to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("at least 2"), "{}", text(&o));
}

#[test]
fn weights_with_a_missing_or_misshaped_tensor_are_refused_by_name() {
    let (Some(fx), Some(w)) = (fixtures(), weights()) else {
        return;
    };
    let head = std::fs::read(&w).unwrap()[..8].to_vec();
    let mut t = adt_metrics::weights::read_tensors(&w, &head).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |t: &std::collections::BTreeMap<String, adt_metrics::weights::Raw>, p: &Path| {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = t
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    v.shape.clone(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(k, b, s)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, p).unwrap();
    };
    let a = fx.join("images/a");
    let a = a.to_str().unwrap();
    t.remove("Mixed_6e.branch7x7dbl_4.bn.running_mean");
    let p = dir.path().join("missing.safetensors");
    write(&t, &p);
    let o = run(dir.path(), &p, &["fid", a, a]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("Mixed_6e.branch7x7dbl_4.bn.running_mean"),
        "{}",
        text(&o)
    );
}

#[test]
fn bench_inception_reports_throughput_and_trace_sqrt_time() {
    let Some(w) = weights() else { return };
    let cache = tempfile::tempdir().unwrap();
    let o = run(
        cache.path(),
        &w,
        &[
            "bench",
            "inception",
            "--json",
            "--batch",
            "2",
            "--batches",
            "1",
            "--quiet",
        ],
    );
    let v = json(&o);
    assert!(
        v["inception"]["images_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(
        v["trace_sqrt_2048"]["seconds"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // The network's cost is the published 5.71 GMAC, and the throughput is placed against the
    // FMA peak measured in the same call (a CPU without a known vector FMA gives null).
    let macs = v["inception"]["macs_per_image"].as_f64().unwrap();
    assert!((macs / 1e9 - 5.71).abs() < 0.01, "{v}");
    if let Some(p) = v["fma_peak"]["gflops"].as_f64() {
        let f = v["inception"]["fraction_of_peak"].as_f64().unwrap();
        let expect = v["inception"]["images_per_s"].as_f64().unwrap() * 2.0 * macs / (p * 1e9);
        assert!(p > 0.0 && (f - expect).abs() < 1e-9, "{v}");
    }
    // PyTorch is either measured or the reason it was not is given.
    assert!(
        v["inception"]["torch_images_per_s"].is_number()
            || v["inception"]["torch_unavailable"].is_string(),
        "{v}"
    );
}

/// Statistics files that cannot be Inception statistics of one set — another feature width,
/// a header declaring an impossible shape — stop with the file named and exit 4 (bad data).
#[test]
fn statistics_of_another_width_or_impossible_shapes_are_bad_data() {
    use adt_metrics::npz::{Array, Data, write_npz};
    let dir = tempfile::tempdir().unwrap();
    let narrow = dir.path().join("narrow.npz");
    let d = 64;
    write_npz(
        &narrow,
        &[
            (
                "mu",
                Array {
                    shape: vec![d],
                    data: Data::F64(vec![0.0; d]),
                },
            ),
            (
                "sigma",
                Array {
                    shape: vec![d, d],
                    data: Data::F64(vec![0.0; d * d]),
                },
            ),
        ],
        false,
    )
    .unwrap();
    let n = narrow.to_str().unwrap();
    let o = crate::common::run(&["fid", n, n]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("64-dimensional") && text(&o).contains("narrow.npz"),
        "{}",
        text(&o)
    );
    // `mu` of 2⁶² values and no data: refused, not a FID of 0.
    let huge = dir.path().join("huge.npz");
    {
        use std::io::Write;
        let f = std::fs::File::create(&huge).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in ["mu.npy", "sigma.npy"] {
            let header =
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }";
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(header.len() as u16).to_le_bytes());
            b.extend_from_slice(header.as_bytes());
            z.start_file(name, opts).unwrap();
            z.write_all(&b).unwrap();
        }
        z.finish().unwrap();
    }
    let h = huge.to_str().unwrap();
    let o = crate::common::run(&["fid", h, h]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("huge.npz") && text(&o).contains("addressed"),
        "{}",
        text(&o)
    );
}

/// The cache holds only a verified conversion of the standard network: other weights there
/// (the right shapes, other values) stop every FID with the way out; the same file given
/// explicitly is used with a warning that its FIDs are not the standard ones.
#[test]
fn weights_in_the_cache_are_verified_on_every_load() {
    use adt_metrics::weights::{CACHE_FILE, InceptionWeights};
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("inception");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = InceptionWeights::random(3).to_safetensors().unwrap();
    std::fs::write(dir.join(CACHE_FILE), &bytes).unwrap();
    let fetch = |extra: &[&str]| {
        crate::common::bin()
            .args(["fid", "--fetch-weights"])
            .args(extra)
            .env("ADT_CACHE_DIR", cache.path())
            .env_remove("ADT_INCEPTION_WEIGHTS")
            .output()
            .unwrap()
    };
    let o = fetch(&[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("not the standard network") && text(&o).contains("--fetch-weights"),
        "{}",
        text(&o)
    );
    let own = cache.path().join("mine.safetensors");
    std::fs::write(&own, &bytes).unwrap();
    let o = fetch(&["--inception-weights", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not comparable with published ones"),
        "{}",
        text(&o)
    );
}
