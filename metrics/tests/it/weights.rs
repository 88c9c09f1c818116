//! Weight packagings: a genuine `torch.save` state dict (made by torch, committed), and the
//! converted cache file against the archive it came from.

use adt_metrics::weights::read_tensors;

#[test]
fn reads_a_real_torch_save_state_dict() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_save_small.pth");
    let t = read_tensors(&p, b"PK\x03\x04").unwrap();
    let w = &t["Conv2d_1a_3x3.conv.weight"];
    assert_eq!(w.shape, [2, 3, 3, 3]);
    // torch.linspace(-1, 1, 54)
    for (i, v) in w.data.iter().enumerate() {
        let want = -1.0 + 2.0 * i as f32 / 53.0;
        assert!((v - want).abs() < 1e-6, "{i}: {v} vs {want}");
    }
    // A view into a shared storage at offset 4 of arange(12) * 0.5.
    assert_eq!(t["Conv2d_1a_3x3.bn.running_mean"].data, [2.0, 2.5]);
    assert_eq!(t["Conv2d_1a_3x3.bn.running_var"].data, [1.5, 2.5]);
    assert!(!t.contains_key("Conv2d_1a_3x3.bn.num_batches_tracked"));
}

#[test]
fn corrupt_weight_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.pth");
    std::fs::write(&p, b"PK\x03\x04 this is not a zip").unwrap();
    let e = adt_metrics::InceptionWeights::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.pth") && e.contains("zip"), "{e}");
    std::fs::write(&p, b"hello").unwrap();
    let e = adt_metrics::InceptionWeights::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither"), "{e}");
}
