//! Weights and optimizer state: save/load round trips, resume equivalence, refusals of wrong
//! weights with clear messages.

use adt_plugin_api::{HostTensor, ModelPlugin, OptimConfig, TensorRef};
use adt_plugin_tiny::{TinyModel, params_to_bytes};

fn model(seed: u64) -> TinyModel {
    TinyModel::create(&serde_json::json!({
        "weights": "random", "seed": seed,
        "arch": {"size": 8, "channels": [8, 8, 8], "emb": 8, "token_dim": 4, "groups": 4}
    }))
    .unwrap()
}

fn train_step(m: &mut TinyModel, seed: u64) -> f64 {
    train_step_with(m, seed, None)
}

fn train_step_with(m: &mut TinyModel, seed: u64, ema_decay: Option<f64>) -> f64 {
    let x0 = HostTensor {
        shape: vec![2, 3, 8, 8],
        data: (0..384)
            .map(|i| ((i * 7 % 13) as f32 / 13.0) - 0.5)
            .collect(),
    };
    let c = m.encode_prompts(&["a red circle".into()]).unwrap();
    m.zero_grad().unwrap();
    let l = m
        .diffusion_loss(
            TensorRef {
                shape: &x0.shape,
                data: &x0.data,
            },
            c,
            seed,
            1.0,
        )
        .unwrap();
    let stats = m
        .step(&OptimConfig {
            clip_grad_norm: Some(1.0),
            ema_decay,
            ..OptimConfig::adamw(1e-2)
        })
        .unwrap();
    assert_eq!(stats.ema, ema_decay.is_some());
    m.release_cond(c).unwrap();
    l
}

fn flat_file(path: &std::path::Path) -> Vec<f32> {
    flat(&TinyModel::create(&serde_json::json!({ "weights": path })).unwrap())
}

#[test]
fn the_moving_average_follows_the_weights_and_resumes() {
    let decay = 0.9;
    let dir = tempfile::tempdir().unwrap();
    let mut a = model(4);
    // The reference average, computed here from the weights after each step with the
    // documented warm-up: a copy at the first update, then min(decay, (1+n)/(10+n)).
    let mut reference: Vec<f64> = Vec::new();
    for n in 0..4u64 {
        train_step_with(&mut a, n, Some(decay));
        let w = flat(&a);
        let d = if n == 0 {
            0.0
        } else {
            decay.min((1 + n) as f64 / (10 + n) as f64)
        };
        reference = if n == 0 {
            w.iter().map(|&x| x as f64).collect()
        } else {
            reference
                .iter()
                .zip(&w)
                .map(|(e, &x)| d * e + (1.0 - d) * x as f64)
                .collect()
        };
    }
    a.save_state(dir.path()).unwrap();
    let ema = flat_file(&dir.path().join("ema.safetensors"));
    let weights = flat(&a);
    assert_eq!(ema.len(), reference.len());
    let worst = ema
        .iter()
        .zip(&reference)
        .map(|(&e, r)| (e as f64 - r).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-6,
        "average differs from the reference by {worst}"
    );
    assert!(
        ema.iter().zip(&weights).any(|(e, w)| (e - w).abs() > 1e-4),
        "the average is not just the weights"
    );
    // Resume: the average and its update count come back, the next update is identical.
    let mut b = model(77);
    b.load_state(dir.path()).unwrap();
    train_step_with(&mut a, 9, Some(decay));
    train_step_with(&mut b, 9, Some(decay));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.save_state(da.path()).unwrap();
    b.save_state(db.path()).unwrap();
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(
            std::fs::read(da.path().join(f)).unwrap() == std::fs::read(db.path().join(f)).unwrap(),
            "{f} differs after a resumed step"
        );
    }
    // Without an average no ema file is written; a bad decay is refused before any update.
    let mut c = model(4);
    train_step(&mut c, 0);
    let dc = tempfile::tempdir().unwrap();
    c.save_state(dc.path()).unwrap();
    assert!(!dc.path().join("ema.safetensors").exists());
    // A checkpoint without its optimizer state is refused, not resumed with fresh moments.
    std::fs::remove_file(dc.path().join("optimizer.safetensors")).unwrap();
    let e = model(5).load_state(dc.path()).unwrap_err();
    assert!(e.0.contains("optimizer.safetensors"), "{}", e.0);
    let before = flat(&c);
    let e = c
        .step(&OptimConfig {
            ema_decay: Some(1.0),
            ..OptimConfig::adamw(1e-2)
        })
        .unwrap_err();
    assert!(e.0.contains("ema_decay"), "{}", e.0);
    assert_eq!(flat(&c), before);
}

fn flat(m: &TinyModel) -> Vec<f32> {
    m.params()
        .vars
        .values()
        .flat_map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = model(3);
    for s in 0..3 {
        train_step(&mut a, s);
    }
    a.save_state(dir.path()).unwrap();
    let mut b = model(99); // different init: everything must come from the state
    b.load_state(dir.path()).unwrap();
    assert_eq!(flat(&a), flat(&b));
    // The optimizer moments and step count were restored too: the next step is identical.
    let la = train_step(&mut a, 10);
    let lb = train_step(&mut b, 10);
    assert_eq!(la, lb);
    assert_eq!(flat(&a), flat(&b));
    // Loading weights from a file works like loading from the state folder.
    let c =
        TinyModel::create(&serde_json::json!({"weights": dir.path().join("model.safetensors")}))
            .unwrap();
    assert_eq!(c.config(), a.config());
    assert!(c.describe().unwrap().weights_hash.is_some());
}

#[test]
fn half_precision_weights_load() {
    let a = model(1);
    let bytes = params_to_bytes(a.config(), a.params(), true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w16.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    let b = TinyModel::create(&serde_json::json!({ "weights": p })).unwrap();
    for (x, y) in flat(&a).iter().zip(flat(&b)) {
        assert!((x - y).abs() <= 1e-3 * x.abs().max(1e-2), "{x} vs {y}");
    }
}

#[test]
fn wrong_weights_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = |v: serde_json::Value| TinyModel::create(&v).err().expect("must fail").0;
    let p = dir.path().join("x.safetensors");
    std::fs::write(&p, b"garbage").unwrap();
    assert!(err(serde_json::json!({"weights": p})).contains("not a safetensors file"));
    // A valid safetensors file from another model.
    let other = safetensors::serialize(
        vec![(
            "w".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(&p, other).unwrap();
    assert!(err(serde_json::json!({"weights": p})).contains("not tiny-model weights"));
    assert!(
        err(serde_json::json!({"weights": dir.path().join("missing.safetensors")}))
            .contains("cannot read weights")
    );
    // Metadata whose config describes a huge model, in a file of a few hundred bytes: refused
    // by counting, before the layout is allocated.
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), adt_plugin_tiny::FORMAT.to_string());
    meta.insert(
        "config".to_string(),
        r#"{"size":32,"channels":[20000,20000,20000],"emb":128,"token_dim":32,"groups":8}"#
            .to_string(),
    );
    // One scalar, with the given metadata.
    let one = |meta: &std::collections::HashMap<String, String>| {
        safetensors::serialize(
            vec![(
                "w".to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                    .unwrap(),
            )],
            Some(meta.clone()),
        )
        .unwrap()
    };
    let huge = one(&meta);
    assert!(huge.len() < 1000);
    std::fs::write(&p, &huge).unwrap();
    let e = err(serde_json::json!({"weights": p}));
    assert!(e.contains("parameters, the file holds 1"), "{e}");
    meta.insert(
        "config".to_string(),
        r#"{"size":32,"channels":[0,1,18446744073709551615],"emb":128,"token_dim":32,"groups":8}"#
            .to_string(),
    );
    let bad = one(&meta);
    std::fs::write(&p, &bad).unwrap();
    let e = err(serde_json::json!({"weights": p}));
    assert!(e.contains("is not a tiny architecture"), "{e}");
    let e = err(
        serde_json::json!({"weights": "random", "arch": {"size": 32, "channels": [20000, 20000, 20000], "emb": 128, "token_dim": 32, "groups": 8}}),
    );
    assert!(e.contains("at most 2^31"), "{e}");
    assert!(err(serde_json::json!({"weights": "random", "typo": 1})).contains("unknown field"));
    assert!(err(serde_json::json!({"device": "tpu"})).contains("unknown device"));
    // Loading a checkpoint of another architecture into an instance is refused.
    let a = model(1);
    a.save_state(dir.path()).unwrap();
    let mut big = TinyModel::create(&serde_json::json!({"weights": "random"})).unwrap();
    assert!(
        big.load_state(dir.path())
            .err()
            .unwrap()
            .0
            .contains("architecture")
    );
}

#[test]
fn saved_bytes_are_canonical() {
    // The same parameters always serialise to the same bytes (sorted header keys).
    let a = model(5);
    let first = params_to_bytes(a.config(), a.params(), false).unwrap();
    for _ in 0..5 {
        assert!(params_to_bytes(a.config(), a.params(), false).unwrap() == first);
    }
    let (n, _) = safetensors::SafeTensors::read_metadata(&first).unwrap();
    assert!(n > 0);
    let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
    let keys: Vec<usize> = ["\"__metadata__\"", "\"conv_in.bias\"", "\"conv_out.bias\""]
        .iter()
        .map(|k| header.find(k).unwrap())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "header keys are sorted: {header}"
    );
}

/// The shipped wider base reads as the architecture its metadata and the README give:
/// channels 40 / 80 / 120, 2 072 707 parameters, every value finite.
#[test]
fn the_shipped_wide_base_is_the_documented_architecture() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny-wide.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (cfg, params) =
        adt_plugin_tiny::params_from_bytes(&bytes, &candle_core::Device::Cpu).unwrap();
    assert_eq!(cfg.channels, [40, 80, 120]);
    assert_eq!(cfg.size, 32);
    let values = flat_file(&path);
    assert_eq!(values.len(), 2_072_707);
    assert_eq!(params.vars["conv_in.weight"].dims(), &[40, 3, 3, 3]);
    assert!(values.iter().all(|v| v.is_finite()));
}
