//! The `tf-legacy` resize against torch-fidelity's TF1-exact bilinear (reference made by
//! `tests/data/make_tf1_resize.py`). The `clean` and `pytorch-fid` resizes are checked end to
//! end by the feature parity test (the fixture images are up- and down-scaled).

#[test]
fn tf1_bilinear_matches_torch_fidelity() {
    let Some(dir) = crate::common::fid_fixtures() else {
        return;
    };
    let refp = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tf1_resize_reference.safetensors");
    for name in ["03.png", "04.png"] {
        let img = image::open(dir.join("images/a").join(name))
            .unwrap()
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut nchw = Vec::new();
        for c in 0..3 {
            let plane: Vec<f32> = img.pixels().map(|p| p.0[c] as f32).collect();
            nchw.extend(adt_metrics::preprocess::tf1_bilinear(
                &plane, w, h, 299, 299,
            ));
        }
        let ours: Vec<f32> = nchw.into_iter().step_by(7).collect();
        let (_, want) = crate::common::read_f32(&refp, name);
        assert_eq!(ours.len(), want.len());
        let max = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name} ({w}×{h} → 299×299): max |Δ| {max:e}");
        assert!(max <= 1e-4, "{name}: {max}");
    }
}
