//! Parity with the reference implementations on `../shared/fixtures/fid`: per-image features
//! of clean-fid's `clean` mode and pytorch-fid, FID between the two image folders, FID and KID
//! from the stored feature sets.

use adt_metrics::features::Extractor;
use adt_metrics::stats::{FeatureStats, fid, kid};
use adt_metrics::{Mode, arch::DIMS};

fn reference() -> Option<(std::path::PathBuf, serde_json::Value)> {
    let dir = crate::common::fid_fixtures()?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    Some((dir, json))
}

fn stats_of(features: &[f32]) -> FeatureStats {
    let mut s = FeatureStats::new(DIMS);
    s.add(features);
    s
}

#[test]
fn features_and_fid_match_clean_fid_and_pytorch_fid() {
    let Some((dir, refj)) = reference() else {
        return;
    };
    let Some(net) = crate::common::inception() else {
        return;
    };
    let st = dir.join("reference.safetensors");
    for (mode, key, fid_key) in [
        (Mode::Clean, "clean", "images.clean.scipy_sqrtm"),
        (
            Mode::PytorchFid,
            "pytorch_fid",
            "images.pytorch_fid.scipy_sqrtm",
        ),
    ] {
        let ex = Extractor::new(net, mode, 5);
        let mut sets = Vec::new();
        for set in ["a", "b"] {
            let imgs = crate::common::images(&dir.join("images").join(set));
            let names: Vec<_> = imgs.iter().map(|(n, _)| n.clone()).collect();
            let imgs: Vec<_> = imgs.into_iter().map(|(_, i)| i).collect();
            let ours = ex.features(&imgs).unwrap();
            let (shape, want) = crate::common::read_f32(&st, &format!("images_{set}.{key}"));
            assert_eq!(shape, [imgs.len(), DIMS]);
            let mut worst_mean = 0f64;
            let mut worst_max = 0f32;
            for (i, name) in names.iter().enumerate() {
                let a = &ours[i * DIMS..(i + 1) * DIMS];
                let b = &want[i * DIMS..(i + 1) * DIMS];
                let max = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                let mean = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs() as f64)
                    .sum::<f64>()
                    / DIMS as f64;
                eprintln!("{mode} {set}/{name}: max |Δ| {max:.2e}, mean |Δ| {mean:.2e}");
                worst_max = worst_max.max(max);
                worst_mean = worst_mean.max(mean);
            }
            assert!(worst_max <= 5e-3, "{mode} {set}: max abs {worst_max}");
            assert!(worst_mean <= 5e-4, "{mode} {set}: mean abs {worst_mean}");
            sets.push(ours);
        }
        let r = fid(
            &stats_of(&sets[0]).gaussian(),
            &stats_of(&sets[1]).gaussian(),
        )
        .unwrap();
        let want = refj["fid"][fid_key].as_f64().unwrap();
        eprintln!("{mode}: FID a-b {:.6} (reference {want:.6})", r.fid);
        assert!(
            (r.fid - want).abs() <= 0.05,
            "{mode}: FID {} vs {want}",
            r.fid
        );
    }
}

#[test]
fn fid_and_kid_from_stored_features_match_scipy() {
    let Some((dir, refj)) = reference() else {
        return;
    };
    let st = dir.join("reference.safetensors");
    let (_, a) = crate::common::read_f32(&st, "stats_a.features");
    let (_, b) = crate::common::read_f32(&st, "stats_b.features");
    let r = fid(&stats_of(&a).gaussian(), &stats_of(&b).gaussian()).unwrap();
    let want = refj["fid"]["stats.clean.scipy_sqrtm"].as_f64().unwrap();
    let eigh = refj["fid"]["stats.clean.eigh"].as_f64().unwrap();
    eprintln!(
        "FID stats: {:.10} (scipy sqrtm {want:.10}, numpy eigh {eigh:.10}); rank {}, min eig {:.2e}",
        r.fid, r.rank, r.min_eigenvalue
    );
    assert!((r.fid - want).abs() <= 1e-3, "{} vs {want}", r.fid);
    // 400 samples of 2048-d: rank-deficient, so the eigen route (Cholesky refuses it).
    assert_eq!(r.route, "eigen");
    // The Gram-space route the bootstrap intervals use, on the same features.
    let g = adt_metrics::bootstrap::GramSets::new(&[&a, &b], DIMS).unwrap();
    let gf = g
        .fid(
            &g.rows(0).collect::<Vec<_>>(),
            &g.rows(1).collect::<Vec<_>>(),
        )
        .unwrap();
    eprintln!("FID stats, Gram route: {gf:.10}");
    assert!((gf - want).abs() <= 1e-3, "{gf} vs {want}");
    // Halves of the same set.
    let h = a.len() / 2;
    let r = fid(&stats_of(&a[..h]).gaussian(), &stats_of(&a[h..]).gaussian()).unwrap();
    let want = refj["fid"]["stats.a_half_vs_a_half.scipy_sqrtm"]
        .as_f64()
        .unwrap();
    eprintln!("FID a-half vs a-half: {:.10} (scipy {want:.10})", r.fid);
    assert!((r.fid - want).abs() <= 1e-3, "{} vs {want}", r.fid);
    // KID: with 400 vs 400 features every subset of size min(n, 1000) = 400 is the whole set,
    // so clean-fid's value is deterministic and we must match it to round-off.
    let k = kid(&a, &b, DIMS, 100, 1000, 0).unwrap();
    let want = refj["kid"]["stats.clean"].as_f64().unwrap();
    eprintln!("KID: {:.10} ± {:.2e} (clean-fid {want:.10})", k.kid, k.std);
    assert!(
        (k.kid - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{} vs {want}",
        k.kid
    );
    assert!(k.std < 1e-9, "every subset is the full set");
}
