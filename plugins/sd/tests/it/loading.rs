//! Where pipelines come from: the Hugging Face cache layout, what a download would fetch,
//! a failed download's message, and `fp16` weight variants.

use crate::common::*;
use adt_plugin_api::ModelPlugin;
use adt_plugin_sd::hub;
use adt_plugin_sd::plugin::{Sd15, SdPlugin};

#[test]
fn a_repo_id_resolves_to_its_snapshot_in_the_hugging_face_cache() {
    let Some(dir) = fixture("sd15") else { return };
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().join("models--tiny-org--tiny-sd15");
    copy_dir(&dir, &root.join("snapshots/0123abcd"));
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "0123abcd\n").unwrap();
    let snap = hub::resolve_in("tiny-org/tiny-sd15", Some(cache.path()), None, None).unwrap();
    assert_eq!(snap, root.join("snapshots/0123abcd"));
    let at = hub::resolve_in(
        "tiny-org/tiny-sd15@0123abcd",
        Some(cache.path()),
        None,
        None,
    )
    .unwrap();
    assert_eq!(at, snap);
    let m = SdPlugin::<Sd15>::create(&serde_json::json!({"weights": snap.display().to_string()}))
        .unwrap();
    let d = m.describe().unwrap();
    assert_eq!(d.name, "sd15");
    // The manifest's record of where the weights came from.
    assert_eq!(
        d.extra["hub"],
        serde_json::json!({"repo": "tiny-org/tiny-sd15", "revision": "0123abcd"})
    );
    // Not cached and offline: the message says what to do.
    let e = hub::resolve_in("tiny-org/other", Some(cache.path()), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tiny-org/other") && e.contains("huggingface-cli download"),
        "{e}"
    );
    let e = hub::resolve_in("./nope", Some(cache.path()), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such folder"), "{e}");
}

/// A cached weight file is a link to `blobs/SHA256` as hf-hub stores it: hashing the
/// pipeline checks the content against that published hash, and a changed blob is refused.
#[test]
fn cached_blobs_are_checked_against_the_hash_the_hub_published() {
    let Some(dir) = fixture("sd15") else { return };
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().join("models--tiny-org--tiny-sd15");
    let snap = root.join("snapshots/0123abcd");
    copy_dir(&dir, &snap);
    let weights = adt_plugin_sd::load::weight_files(&snap.join("unet"), None).unwrap();
    let w = &weights[0];
    let bytes = std::fs::read(w).unwrap();
    let sha = adt_plugin_kit::sha256_file(w).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    let blob = root.join("blobs").join(&sha);
    std::fs::write(&blob, &bytes).unwrap();
    std::fs::remove_file(w).unwrap();
    std::os::unix::fs::symlink(&blob, w).unwrap();
    assert_eq!(hub::published_sha256(w), Some(sha.clone()));
    adt_plugin_sd::plugin::pipeline_hash_in(&snap, None, None).unwrap();
    // One byte changed behind the link.
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    let e = adt_plugin_sd::plugin::pipeline_hash_in(&snap, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the hub published") && e.contains(&sha), "{e}");
}

#[test]
fn a_failed_download_names_the_repo_and_the_way_out() {
    let cache = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port: the listing request fails fast.
    let e = hub::resolve_in(
        "tiny-org/absent",
        Some(cache.path()),
        None,
        Some(Some("http://127.0.0.1:9")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tiny-org/absent") && e.contains("downloading it failed"),
        "{e}"
    );
}

#[test]
fn downloads_fetch_one_safetensors_set_per_component_and_no_pickles() {
    let files: Vec<String> = [
        "model_index.json",
        "README.md",
        "v1-5-pruned.ckpt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_flax_model.msgpack",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
        "safety_checker/pytorch_model.bin",
        "onnx/unet/model.onnx",
    ]
    .map(String::from)
    .to_vec();
    let full = hub::wanted_files(&files, None);
    assert!(full.contains(&"unet/diffusion_pytorch_model.safetensors".into()));
    assert!(
        !full.iter().any(|f| f.contains("fp16")
            || f.ends_with(".bin")
            || f.ends_with(".ckpt")
            || f.contains("onnx")
            || f.contains("msgpack")),
        "{full:?}"
    );
    let half = hub::wanted_files(&files, Some("fp16"));
    assert!(
        half.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".into()),
        "{half:?}"
    );
    assert!(
        !half.contains(&"unet/diffusion_pytorch_model.safetensors".into()),
        "{half:?}"
    );
    // The VAE has no fp16 file: its full-precision weights are taken.
    assert!(
        half.contains(&"vae/diffusion_pytorch_model.safetensors".into()),
        "{half:?}"
    );
    assert!(
        half.contains(&"tokenizer/merges.txt".into()) && half.contains(&"model_index.json".into())
    );
}

#[test]
fn an_fp16_variant_is_preferred_when_asked_for() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("sd15");
    copy_dir(&dir, &p);
    let f = p.join("unet/diffusion_pytorch_model.safetensors");
    let t = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).unwrap();
    let half: std::collections::HashMap<String, candle_core::Tensor> = t
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(
        &half,
        p.join("unet/diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    let out = |variant: Option<&str>| {
        let [h, w] = image_hw(&reference_json(&dir));
        let mut cfg =
            serde_json::json!({"weights": p.display().to_string(), "height": h, "width": w});
        if let Some(v) = variant {
            cfg["variant"] = v.into();
        }
        let mut m = SdPlugin::<Sd15>::create(&cfg).unwrap();
        let json = reference_json(&dir);
        let c = m
            .encode_prompts(&[String::new(), json["prompt"].as_str().unwrap().into()])
            .unwrap();
        let x = r(&refs, "unet.x");
        let xh = adt_plugin_api::HostTensor {
            shape: x.dims().to_vec(),
            data: x.flatten_all().unwrap().to_vec1().unwrap(),
        };
        let o = m
            .denoise(&adt_plugin_api::DenoiseArgs {
                x: xh.view(),
                t: &[500.0, 500.0],
                cond: c,
                uncond: None,
                guidance: 1.0,
                detach_uncond: false,
            })
            .unwrap();
        candle_core::Tensor::from_vec(o.data, o.shape, &candle_core::Device::Cpu).unwrap()
    };
    let want = r(&refs, "unet.out.1");
    let full = rel(&out(None), &want);
    let fp16 = rel(&out(Some("fp16")), &want);
    eprintln!("f32 weights rel {full:.2e}, fp16 weights rel {fp16:.2e}");
    assert!(full < 1e-5, "{full}");
    assert!(
        fp16 > 1e-5 && fp16 < 1e-2,
        "the fp16 file was used and is close: {fp16}"
    );
}

#[test]
fn half_precision_compute_runs_and_stays_close_to_f32() {
    let Some(dir) = fixture("sd3") else { return };
    let refs = reference(&dir);
    let json = reference_json(&dir);
    let bf16 = serde_json::json!({"weights": dir.display().to_string(), "dtype": "bf16"});
    match adt_plugin_sd::plugin::SdPlugin::<adt_plugin_sd::plugin::Sd3>::create(&bf16) {
        Ok(_) => panic!("bf16 on CPU accepted"),
        Err(e) => assert!(e.0.contains("bf16 needs a CUDA device"), "{}", e.0),
    }
    {
        let dtype = "f16";
        let [h, w] = image_hw(&json);
        let cfg = serde_json::json!({"weights": dir.display().to_string(), "height": h, "width": w, "dtype": dtype});
        let mut m =
            adt_plugin_sd::plugin::SdPlugin::<adt_plugin_sd::plugin::Sd3>::create(&cfg).unwrap();
        let c = m
            .encode_prompts(&[String::new(), json["prompt"].as_str().unwrap().into()])
            .unwrap();
        let x = r(&refs, "transformer.x");
        let xh = adt_plugin_api::HostTensor {
            shape: x.dims().to_vec(),
            data: x.flatten_all().unwrap().to_vec1().unwrap(),
        };
        let t: Vec<f32> = r(&refs, "transformer.timesteps").to_vec1().unwrap();
        let args = adt_plugin_api::DenoiseArgs {
            x: xh.view(),
            t: &[t[1], t[1]],
            cond: c,
            uncond: None,
            guidance: 1.0,
            detach_uncond: false,
        };
        let o = m.denoise(&args).unwrap();
        let o = candle_core::Tensor::from_vec(o.data, o.shape, &candle_core::Device::Cpu).unwrap();
        let e = rel(&o, &r(&refs, "transformer.out.1"));
        eprintln!("{dtype}: denoiser rel {e:.2e}");
        assert!(e > 1e-6 && e < 5e-2, "{dtype}: {e}");
        // A training step in half precision: the gradient reaches the weights.
        let cot = adt_plugin_api::HostTensor {
            shape: xh.shape.clone(),
            data: vec![0.01; xh.data.len()],
        };
        m.denoise_vjp(&args, cot.view(), false).unwrap();
        let g = m
            .grad("proj_out.weight")
            .expect("gradient in half precision");
        assert!(g.data.iter().all(|v| v.is_finite()) && g.data.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn the_pipeline_hash_is_cached_by_file_identity_and_follows_changes() {
    use adt_plugin_sd::plugin::pipeline_hash_in;
    let Some(dir) = fixture("sd15") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("sd15");
    copy_dir(&dir, &p);
    let cache = tmp.path().join("hashes");
    let uncached = pipeline_hash_in(&p, None, None).unwrap();
    let first = pipeline_hash_in(&p, None, Some(&cache)).unwrap();
    assert_eq!(first, uncached);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "one cache entry written"
    );
    // A planted wrong entry is what a cached read returns: proof the cache is used …
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, "f".repeat(64)).unwrap();
    assert_eq!(
        pipeline_hash_in(&p, None, Some(&cache)).unwrap(),
        "f".repeat(64)
    );
    // … which `--verify` bypasses: every file is hashed again, and the entry is rewritten …
    let verified =
        adt_plugin_sd::plugin::pipeline_hash_verified(&p, None, Some(&cache), true).unwrap();
    assert_eq!(verified, first);
    assert_eq!(std::fs::read_to_string(&entry).unwrap(), first);
    std::fs::write(&entry, "f".repeat(64)).unwrap();
    // … and changing a weight file (size) changes the key, so the content is hashed again.
    let w = p.join("vae/diffusion_pytorch_model.safetensors");
    let t = candle_core::safetensors::load(&w, &candle_core::Device::Cpu).unwrap();
    let mut t2 = t.clone();
    t2.insert(
        "extra".into(),
        candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    std::fs::remove_file(&w).unwrap();
    candle_core::safetensors::save(&t2, &w).unwrap();
    let changed = pipeline_hash_in(&p, None, Some(&cache)).unwrap();
    assert_ne!(changed, "f".repeat(64));
    assert_ne!(changed, first);
    assert_eq!(changed, pipeline_hash_in(&p, None, None).unwrap());
}

/// Revisions and shard names come from files and command lines: one that climbs out of its
/// folder is refused (or not found), never joined into a path.
#[test]
fn revisions_and_shard_names_stay_inside_their_folders() {
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().join("models--org--name");
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::create_dir_all(root.join("snapshots")).unwrap();
    // A folder the escaping revisions would reach, holding a pipeline index.
    let outside = cache.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("model_index.json"), "{}").unwrap();
    for rev in ["../../elsewhere", outside.to_str().unwrap()] {
        std::fs::write(root.join("refs/main"), rev).unwrap();
        assert_eq!(
            hub::cached_snapshot(cache.path(), "org/name", None),
            None,
            "{rev}"
        );
        assert_eq!(
            hub::cached_snapshot(cache.path(), "org/name", Some(rev)),
            None,
            "{rev}"
        );
        let e = hub::resolve_in(&format!("org/name@{rev}"), Some(cache.path()), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain names"), "{rev}: {e}");
    }
    // A revision that names a branch with slashes stays inside and is looked up.
    assert!(hub::stays_inside("refs/pr/1") && !hub::stays_inside("a/../../b"));

    let comp = tempfile::tempdir().unwrap();
    std::fs::write(
        comp.path()
            .join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"weight_map": {"a.weight": "../../../etc/passwd"}}"#,
    )
    .unwrap();
    let e = adt_plugin_sd::load::weight_files(comp.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the component folder"), "{e}");
}
