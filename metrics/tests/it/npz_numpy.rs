//! Statistics files written by numpy as pytorch-fid and clean-fid write them
//! (`tests/data/make_numpy_stats.py`), read back and checked against our own statistics of the
//! same samples.

use adt_metrics::npz::{Data, parse_npy, read_stats};

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn reads_numpy_written_statistics() {
    let x = parse_npy(&std::fs::read(data("expected_x.npy")).unwrap()).unwrap();
    assert_eq!(x.shape, [10, 3]);
    let Data::F64(xv) = x.data else { panic!("f64") };
    // np.mean / np.cov of the f64 samples.
    let n = 10.0;
    let mu: Vec<f64> = (0..3)
        .map(|j| (0..10).map(|i| xv[i * 3 + j]).sum::<f64>() / n)
        .collect();
    for (file, tol) in [
        ("pytorch_fid_style.npz", 1e-15),
        ("clean_fid_style.npz", 1e-15),
        ("fortran_f32.npz", 1e-6),
    ] {
        let s = read_stats(&data(file)).unwrap();
        for (j, (got, want)) in s.gaussian.mu.iter().zip(&mu).enumerate() {
            assert!((got - want).abs() < tol, "{file} mu[{j}]");
        }
        for a in 0..3 {
            for b in 0..3 {
                let c: f64 = (0..10)
                    .map(|i| (xv[i * 3 + a] - mu[a]) * (xv[i * 3 + b] - mu[b]))
                    .sum::<f64>()
                    / (n - 1.0);
                let got = s.gaussian.sigma[a * 3 + b];
                assert!((got - c).abs() < tol, "{file} sigma[{a},{b}] {got} vs {c}");
            }
        }
        assert!(s.features.is_none() && s.meta.is_none());
    }
}

#[test]
fn files_without_mu_or_sigma_are_refused_clearly() {
    let e = read_stats(&data("expected_x.npy")).unwrap_err().to_string();
    assert!(e.contains("expected_x.npy"), "{e}");
}
