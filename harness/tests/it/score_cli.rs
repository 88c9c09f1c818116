//! `adt-bench score` on the clip-metrics fixture: the numbers match the reference through
//! the command, and bad input (too many prompt lines, an undecodable image, a checkpoint of
//! the wrong family) stops with a clear message.

use std::path::{Path, PathBuf};

use crate::common::{run, text};

fn fixture() -> Option<PathBuf> {
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = base.join("clip-metrics");
    if p.join("reference.safetensors").exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: clip-metrics fixtures not found at {}",
            p.display()
        );
        None
    }
}

fn reference(dir: &Path, name: &str) -> Vec<f64> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

/// The fixture's models passed as flags (HPSv2's tokenizer: open_clip's vocabulary, fetched
/// once into the cache by the metrics tests, or here).
fn model_flags(f: &Path) -> Vec<String> {
    let s = |p: &str| f.join(p).display().to_string();
    vec![
        "--clip-model".into(),
        s("hf-clip"),
        "--pickscore-model".into(),
        s("hf-clip"),
        "--aesthetic-clip".into(),
        s("hf-clip"),
        "--aesthetic-head".into(),
        s("aesthetic-head.safetensors"),
        "--aesthetic-processor".into(),
        "torchvision".into(),
        "--hps-model".into(),
        s("open-clip/open_clip_model.safetensors"),
        "--hps-config".into(),
        s("open-clip/tiny-hpsv2-vit.json"),
    ]
}

/// Copy the first `n` reference images into `dir` named so that name order = reference order.
fn copy_images(f: &Path, dir: &Path, n: usize) {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("reference.json")).unwrap()).unwrap();
    for (i, im) in r["images"].as_array().unwrap().iter().take(n).enumerate() {
        let src = f.join(im["file"].as_str().unwrap());
        std::fs::copy(
            &src,
            dir.join(format!(
                "{i}_{}",
                src.file_name().unwrap().to_string_lossy()
            )),
        )
        .unwrap();
    }
}

fn score(dir: &Path, extra: &[&str], f: &Path) -> std::process::Output {
    let flags = model_flags(f);
    let mut args: Vec<&str> = vec!["score", dir.to_str().unwrap()];
    // The fixture's models, except where the test passes its own.
    for pair in flags.chunks(2) {
        if !extra.contains(&pair[0].as_str()) {
            args.extend([pair[0].as_str(), pair[1].as_str()]);
        }
    }
    args.extend(extra);
    run(&args)
}

#[test]
fn scores_through_the_command_match_the_references() {
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    copy_images(&f, tmp.path(), 3);
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(f.join("prompts.json")).unwrap()).unwrap();
    std::fs::write(tmp.path().join("prompts.txt"), prompts.join("\n") + "\n").unwrap();
    let o = score(tmp.path(), &["--json", "--bootstrap", "200"], &f);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let metric = |name: &str| -> &serde_json::Value {
        j["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {j}"))
    };
    let per = |name: &str| -> Vec<f64> {
        metric(name)["per_sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let close = |what: &str, got: &[f64], want: &[f64], tol: f64| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "{what}: {got:?} vs {want:?}");
        }
    };
    // CLIP score: images 0..2 with prompts 0..2, and torchmetrics' clamped mean.
    close(
        "clipscore",
        &per("clipscore"),
        &reference(&f, "clipscore_paired_3"),
        1e-3,
    );
    close(
        "clipscore value",
        &[metric("clipscore")["value"].as_f64().unwrap()],
        &reference(&f, "clipscore_torchmetrics_3"),
        1e-3,
    );
    // PickScore logits [prompt p][image i] at p = i.
    let pl = reference(&f, "pickscore_logits");
    close(
        "pickscore",
        &per("pickscore"),
        &[pl[0], pl[6 + 1], pl[12 + 2]],
        1e-3,
    );
    // Aesthetic (torchvision processor, as the fixture's embeddings).
    close(
        "aesthetic",
        &per("aesthetic"),
        &reference(&f, "aesthetic_score")[..3],
        1e-5,
    );
    // HPSv2 image i with prompt i: hpsv2_score_all_prompts [6, 3].
    let h = reference(&f, "hpsv2_score_all_prompts");
    close("hpsv2", &per("hpsv2"), &[h[0], h[3 + 1], h[6 + 2]], 1e-5);
    // The weights' hashes are reported; the interval brackets the value.
    for name in ["aesthetic", "clipscore", "pickscore", "hpsv2"] {
        let m = metric(name);
        assert!(!m["weights"].as_array().unwrap().is_empty(), "{name}: {m}");
        let (v, lo, hi) = (
            m["value"].as_f64().unwrap(),
            m["ci95"][0].as_f64().unwrap(),
            m["ci95"][1].as_f64().unwrap(),
        );
        assert!(
            lo <= v + 1e-9 && v <= hi + 1e-9,
            "{name}: {v} not in [{lo}, {hi}]"
        );
    }
}

#[test]
fn bad_input_stops_with_a_clear_message() {
    let Some(f) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    copy_images(&f, tmp.path(), 2);

    // More prompt lines than images.
    let p = tmp.path().join("many.txt");
    std::fs::write(&p, "one\ntwo\nthree\n").unwrap();
    let o = score(
        tmp.path(),
        &["--metric", "clipscore", "--prompts", p.to_str().unwrap()],
        &f,
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("3 prompt line(s)") && t.contains("2 image(s)"),
        "{t}"
    );

    // A file with an image extension that is not an image.
    std::fs::write(tmp.path().join("9_broken.png"), b"not a png at all").unwrap();
    let o = score(tmp.path(), &["--metric", "aesthetic"], &f);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("9_broken.png") && t.contains("cannot decode"),
        "{t}"
    );
    std::fs::remove_file(tmp.path().join("9_broken.png")).unwrap();

    // A transformers CLIPModel given as HPSv2's open_clip checkpoint, and the reverse.
    let hf = f.join("hf-clip/model.safetensors");
    std::fs::write(tmp.path().join("p.txt"), "a\nb\n").unwrap();
    let pfile = tmp.path().join("p.txt");
    let o = score(
        tmp.path(),
        &[
            "--metric",
            "hpsv2",
            "--prompts",
            pfile.to_str().unwrap(),
            "--hps-model",
            hf.to_str().unwrap(),
        ],
        &f,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("transformers CLIPModel checkpoint; HPSv2 needs an open_clip checkpoint"),
        "{}",
        text(&o)
    );
    let oc_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        f.join("hf-clip/config.json"),
        oc_dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        f.join("open-clip/open_clip_model.safetensors"),
        oc_dir.path().join("model.safetensors"),
    )
    .unwrap();
    let o = score(
        tmp.path(),
        &[
            "--metric",
            "clipscore",
            "--prompts",
            pfile.to_str().unwrap(),
            "--clip-model",
            oc_dir.path().to_str().unwrap(),
        ],
        &f,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("holds an open_clip checkpoint"),
        "{}",
        text(&o)
    );

    // Offline and not cached: the message names the file to supply.
    let cache = tempfile::tempdir().unwrap();
    let o = crate::common::bin()
        .args([
            "score",
            tmp.path().to_str().unwrap(),
            "--metric",
            "aesthetic",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .env("ADT_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("openai/clip-vit-large-patch14")
            && t.contains("config.json")
            && t.contains("--aesthetic-clip"),
        "{t}"
    );

    // An unknown metric name.
    let o = score(tmp.path(), &["--metric", "fid"], &f);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("unknown metric `fid`"), "{}", text(&o));
}

#[test]
fn bench_clip_times_our_tower_and_says_when_transformers_is_missing() {
    let o = run(&[
        "bench",
        "clip",
        "--arch",
        "tiny",
        "--batch",
        "2",
        "--batches",
        "1",
        "--python",
        "/nonexistent/python",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["ours_images_per_s"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["macs_per_image"].as_u64().unwrap() > 0, "{j}");
    if j["fma_peak"].is_object() {
        let f = j["ours_fraction_of_peak"].as_f64().unwrap();
        assert!(f > 0.0 && f.is_finite(), "{j}");
    }
    assert!(j["ratio_vs_transformers"].is_null(), "{j}");
    assert!(
        j["transformers_unavailable"]
            .as_str()
            .unwrap()
            .contains("cannot start"),
        "{j}"
    );
}

#[test]
fn models_resolve_from_the_hugging_face_cache_layout_offline() {
    let Some(f) = fixture() else { return };
    let hub = tempfile::tempdir().unwrap();
    // models--org--name/{refs/main, snapshots/REV/…} as huggingface_hub writes it.
    let root = hub.path().join("models--acme--tiny-clip");
    let snap = root.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "0123abcd").unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(f.join("hf-clip").join(file), snap.join(file)).unwrap();
    }
    // A second repo with a config but no weights.
    let bare = hub.path().join("models--acme--no-weights/snapshots/feed");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::create_dir_all(hub.path().join("models--acme--no-weights/refs")).unwrap();
    std::fs::write(
        hub.path().join("models--acme--no-weights/refs/main"),
        "feed",
    )
    .unwrap();
    std::fs::copy(f.join("hf-clip/config.json"), bare.join("config.json")).unwrap();

    let imgs = tempfile::tempdir().unwrap();
    copy_images(&f, imgs.path(), 2);
    std::fs::write(
        imgs.path().join("prompts.txt"),
        "a photo of an astronaut\na cup\n",
    )
    .unwrap();
    let go = |repo: &str| {
        crate::common::bin()
            .args([
                "score",
                imgs.path().to_str().unwrap(),
                "--metric",
                "clipscore",
                "--clip-model",
                repo,
                "--json",
            ])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", hub.path())
            .output()
            .unwrap()
    };
    let o = go("acme/tiny-clip");
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = j["metrics"][0]["weights"].to_string();
    assert!(
        files.contains("snapshots/0123abcd/model.safetensors"),
        "{files}"
    );
    // The same numbers as from the folder itself.
    let o2 = score(imgs.path(), &["--metric", "clipscore", "--json"], &f);
    let j2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(
        j["metrics"][0]["per_sample"],
        j2["metrics"][0]["per_sample"]
    );

    let o = go("acme/no-weights");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("model.safetensors") && t.contains("HF_HUB_OFFLINE"),
        "{t}"
    );
}
