//! Properties of the network itself: batch-size independence, the fast CPU path against the
//! candle path, TorchScript and safetensors packagings giving the same weights.

use adt_metrics::Mode;
use adt_metrics::arch::DIMS;
use adt_metrics::features::Extractor;

#[test]
fn features_do_not_depend_on_the_batch_size() {
    let Some(dir) = crate::common::fid_fixtures() else {
        return;
    };
    let Some(net) = crate::common::inception() else {
        return;
    };
    let imgs: Vec<_> = crate::common::images(&dir.join("images/a"))
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let one = Extractor::new(net, Mode::Clean, 1).features(&imgs).unwrap();
    for batch in [3, 5, 12] {
        let other = Extractor::new(net, Mode::Clean, batch)
            .features(&imgs)
            .unwrap();
        let max = one
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("batch 1 vs {batch}: max |Δ| {max:e}");
        assert!(max <= 1e-5, "batch {batch}: {max}");
    }
}

#[test]
fn fast_cpu_path_matches_the_candle_path() {
    let Some(dir) = crate::common::fid_fixtures() else {
        return;
    };
    let Some(net) = crate::common::inception() else {
        return;
    };
    let imgs: Vec<_> = crate::common::images(&dir.join("images/b"))
        .into_iter()
        .map(|(_, i)| i)
        .take(2)
        .collect();
    let fast = Extractor::new(net, Mode::TfLegacy, 2)
        .features(&imgs)
        .unwrap();
    // NHWC → NCHW for candle.
    let mut nchw = Vec::new();
    for img in &imgs {
        let x = adt_metrics::preprocess::preprocess(img, Mode::TfLegacy);
        for c in 0..3 {
            nchw.extend((0..299 * 299).map(|i| x[i * 3 + c]));
        }
    }
    let x =
        candle_core::Tensor::from_vec(nchw, (2, 3, 299, 299), &candle_core::Device::Cpu).unwrap();
    let slow = net
        .features_candle(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(slow.len(), 2 * DIMS);
    let max = fast
        .iter()
        .zip(&slow)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("fast vs candle: max |Δ| {max:e}");
    assert!(max <= 1e-4, "{max}");
}

/// The network reuses its activation buffers from one pass to the next without clearing
/// them, so every layer must write all of its output: a pass after another of a different
/// batch size and other pixels gives bit for bit what a fresh network gives. Needs no
/// fixtures (invented weights).
#[test]
fn a_pass_leaves_nothing_behind_for_the_next() {
    use adt_metrics::inception::Act;
    use adt_metrics::{Inception, InceptionWeights};
    let w = InceptionWeights::random(3);
    let act = |n: usize, seed: u32| Act {
        n,
        h: 299,
        w: 299,
        c: 3,
        data: (0..n * 299 * 299 * 3)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (v >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect(),
    };
    let fresh = Inception::new(&w).features(&act(1, 11)).unwrap();
    let net = Inception::new(&w);
    net.features(&act(2, 5)).unwrap();
    let reused = net.features(&act(1, 11)).unwrap();
    assert_eq!(fresh.len(), DIMS);
    assert!(
        fresh.iter().any(|v| *v != 0.0),
        "invented weights gave all-zero features"
    );
    let differ = fresh
        .iter()
        .zip(&reused)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} features changed by the earlier pass");
}
