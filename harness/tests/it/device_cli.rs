//! `adt-bench bench device` on the CPU (the device checked against itself): the command runs
//! every step that does not need a GPU, writes its JSON, and a CPU-only build refuses `cuda`
//! with the way to get it. The real run is on a GPU machine (`scripts/device-check.sh`).

use crate::common::{run_with_weights, text, weights};

#[test]
fn the_device_check_runs_on_the_cpu_and_writes_its_summary() {
    let Some(w) = weights() else { return };
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if !fixtures.join("fid/images").is_dir() {
        eprintln!("SKIPPED: no ../shared/fixtures/fid/images");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("check");
    let o = run_with_weights(
        tmp.path(),
        &w,
        &[
            "bench",
            "device",
            "--device",
            "cpu",
            "--skip-sd",
            "--skip-throughput",
            "--fixtures",
            fixtures.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("device-check.json")).unwrap())
            .unwrap();
    // The same device twice: every comparison is exact.
    assert_eq!(j["tiny_calls"]["denoise_rel"], 0.0, "{j}");
    assert_eq!(j["tiny_calls"]["denoise_vjp_input_rel"], 0.0, "{j}");
    assert_eq!(j["tiny_adt_iteration"]["weights_after_rel"], 0.0, "{j}");
    assert_eq!(j["inception_parity"]["images"], 24, "{j}");
    assert_eq!(j["inception_parity"]["features_rel"], 0.0, "{j}");

    if !cfg!(feature = "cuda") {
        let o = crate::common::run(&[
            "bench",
            "device",
            "--device",
            "cuda:0",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        assert!(text(&o).contains("has no CUDA"), "{}", text(&o));
    }
}
