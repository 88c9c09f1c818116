//! The plugin calls themselves (what crosses the C ABI) on the diffusers-tiny fixtures:
//! conditioning through the tokenizers, `denoise_vjp` parameter and input gradients, `decode`,
//! `decode_vjp`, `encode_images`, LoRA adapters' gradients (exactly the full gradient times
//! Aᵀ at initialisation), training steps, checkpoints over the base pipeline, and the
//! errors a user meets (missing or mis-shaped tensors, a pipeline of another family).

use crate::common::*;
use adt_plugin_api::{DenoiseArgs, HostTensor, ModelPlugin, OptimConfig};
use adt_plugin_sd::plugin::{Sd3, Sd15, SdPlugin, Sdxl};
use candle_core::{D, Device, Tensor};

fn host(t: &Tensor) -> HostTensor {
    HostTensor {
        shape: t.dims().to_vec(),
        data: t.flatten_all().unwrap().to_vec1().unwrap(),
    }
}

fn cand(h: &HostTensor) -> Tensor {
    Tensor::from_slice(&h.data, h.shape.as_slice(), &Device::Cpu).unwrap()
}

fn sd15(dir: &std::path::Path, extra: serde_json::Value) -> SdPlugin<Sd15> {
    let [h, w] = image_hw(&reference_json(dir));
    let mut cfg =
        serde_json::json!({"weights": dir.display().to_string(), "height": h, "width": w});
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    SdPlugin::<Sd15>::create(&cfg).unwrap()
}

fn args<'a>(x: &'a HostTensor, t: &'a [f32], cond: u64) -> DenoiseArgs<'a> {
    DenoiseArgs {
        x: x.view(),
        t,
        cond,
        uncond: None,
        guidance: 1.0,
        detach_uncond: false,
    }
}

#[test]
fn denoise_vjp_through_the_plugin_matches_diffusers_gradients() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let json = reference_json(&dir);
    let mut m = sd15(&dir, serde_json::json!({}));
    // Rows [empty prompt, prompt], as the fixture's batch.
    let prompt = json["prompt"].as_str().unwrap().to_string();
    let cond = m.encode_prompts(&[String::new(), prompt]).unwrap();
    let x = host(&r(&refs, "unet.x"));
    let t = [500.0f32, 500.0];
    let out = m.denoise(&args(&x, &t, cond)).unwrap();
    close(
        "unet.out.1 via plugin",
        &cand(&out),
        &r(&refs, "unet.out.1"),
        1e-5,
    );
    let c = host(&r(&refs, "grad.unet.cotangent"));
    let gx = m
        .denoise_vjp(&args(&x, &t, cond), c.view(), true)
        .unwrap()
        .unwrap();
    close(
        "grad.unet.x via plugin",
        &cand(&gx),
        &r(&refs, "grad.unet.x"),
        5e-5,
    );
    for (name, want) in &refs {
        if let Some(p) = name.strip_prefix("grad.unet.param.") {
            let g = m.grad(p).unwrap_or_else(|| panic!("no gradient for {p}"));
            close(name, &cand(&g), want, 5e-5);
        }
    }
    // A second call accumulates: the gradient doubles.
    m.denoise_vjp(&args(&x, &t, cond), c.view(), false).unwrap();
    let g2 = cand(&m.grad("conv_in.weight").unwrap());
    close(
        "accumulated conv_in grad",
        &g2,
        &(r(&refs, "grad.unet.param.conv_in.weight") * 2.0).unwrap(),
        5e-5,
    );
    m.zero_grad().unwrap();
    assert!(m.grad("conv_in.weight").is_none());
}

#[test]
fn vae_calls_through_the_plugin_match_diffusers() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let mut m = sd15(&dir, serde_json::json!({}));
    let lat = host(&r(&refs, "vae.decode.latent"));
    let img = m.decode(lat.view()).unwrap();
    close("decode", &cand(&img), &r(&refs, "vae.decode.out"), 2e-5);
    let enc = m
        .encode_images(host(&r(&refs, "vae.encode.image")).view())
        .unwrap();
    close(
        "encode_images",
        &cand(&enc),
        &r(&refs, "vae.encode.latent_scaled"),
        2e-5,
    );
    let g = m
        .decode_vjp(lat.view(), host(&r(&refs, "grad.vae.cotangent")).view())
        .unwrap();
    close("decode_vjp", &cand(&g), &r(&refs, "grad.vae.latent"), 5e-5);
}

#[test]
fn lora_adapters_start_at_the_base_and_get_the_full_gradient_times_a_transposed() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let json = reference_json(&dir);
    let mut m = sd15(&dir, serde_json::json!({"lora_rank": 2, "seed": 3}));
    let d = m.describe().unwrap();
    assert!(d.trainable_parameters > 0 && d.trainable_parameters < d.parameters / 10);
    let prompt = json["prompt"].as_str().unwrap().to_string();
    let cond = m.encode_prompts(&[String::new(), prompt]).unwrap();
    let x = host(&r(&refs, "unet.x"));
    let t = [500.0f32, 500.0];
    let out = m.denoise(&args(&x, &t, cond)).unwrap();
    close(
        "LoRA at init = base",
        &cand(&out),
        &r(&refs, "unet.out.1"),
        1e-5,
    );
    let c = host(&r(&refs, "grad.unet.cotangent"));
    m.denoise_vjp(&args(&x, &t, cond), c.view(), false).unwrap();
    let mut checked = 0;
    for (name, want) in &refs {
        let Some(p) = name.strip_prefix("grad.unet.param.") else {
            continue;
        };
        let Some(base) = p.strip_suffix(".weight").filter(|b| b.contains(".to_")) else {
            continue;
        };
        let a = m.pipeline().vars[&format!("{base}.lora_A.weight")]
            .as_tensor()
            .clone();
        let gb = cand(&m.grad(&format!("{base}.lora_B.weight")).unwrap());
        // y += x Aᵀ Bᵀ ⇒ dL/dB = (dL/dW) Aᵀ while B = 0.
        close(
            &format!("{base} lora_B grad"),
            &gb,
            &want.matmul(&a.t().unwrap()).unwrap(),
            5e-5,
        );
        let ga = cand(&m.grad(&format!("{base}.lora_A.weight")).unwrap());
        let ga_max = ga
            .abs()
            .unwrap()
            .max_keepdim(D::Minus1)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(ga_max, 0.0, "{base}: A gets no gradient while B = 0");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} attention projections checked");
    assert!(
        m.grad("conv_in.weight").is_none(),
        "the base is frozen under LoRA"
    );
}

#[test]
fn training_steps_and_checkpoints_round_trip_over_the_base_pipeline() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    for lora in [None, Some(2usize)] {
        let extra = match lora {
            Some(r) => serde_json::json!({"lora_rank": r}),
            None => serde_json::json!({}),
        };
        let mut m = sd15(&dir, extra);
        let base_hash = m.describe().unwrap().weights_hash.unwrap();
        let cond = m.encode_prompts(&["a horse".into()]).unwrap();
        let x0 = host(&r(&refs, "vae.encode.latent_scaled"));
        let l = m.diffusion_loss(x0.view(), cond, 7, 1.0).unwrap();
        assert!(l.is_finite() && l > 0.0, "diffusion loss {l}");
        let cfg = OptimConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_grad_norm: Some(1.0),
            grad_scale_divisor: 1.0,
            ema_decay: Some(0.5),
        };
        let s = m.step(&cfg).unwrap();
        assert!(s.grad_norm > 0.0 && !s.skipped_non_finite, "{s:?}");
        let x = host(&r(&refs, "unet.x"));
        let t = [500.0f32, 500.0];
        let c2 = m.encode_prompts(&["a horse".into()]).unwrap();
        let after = m.denoise(&args(&x, &t, c2)).unwrap();
        let moved = rel(&cand(&after), &r(&refs, "unet.out.1"));
        assert!(
            moved > 1e-4,
            "one step must move the output (lora {lora:?}): {moved}"
        );

        let tmp = tempfile::tempdir().unwrap();
        m.save_state(tmp.path()).unwrap();
        let mut back = SdPlugin::<Sd15>::create(
            &serde_json::json!({"weights": tmp.path().display().to_string()}),
        )
        .unwrap();
        let d = back.describe().unwrap();
        assert_ne!(d.weights_hash.unwrap(), base_hash);
        assert_eq!(
            d.image_shape[1..],
            image_hw(&reference_json(&dir)),
            "the checkpoint keeps the image size"
        );
        let c3 = back.encode_prompts(&["a horse".into()]).unwrap();
        let again = back.denoise(&args(&x, &t, c3)).unwrap();
        assert_eq!(
            again.data, after.data,
            "a checkpoint reproduces the tuned model exactly"
        );
        // load_state into a fresh instance restores weights and the optimizer step count.
        let mut fresh = sd15(
            &dir,
            match lora {
                Some(r) => serde_json::json!({"lora_rank": r}),
                None => serde_json::json!({}),
            },
        );
        fresh.load_state(tmp.path()).unwrap();
        let c4 = fresh.encode_prompts(&["a horse".into()]).unwrap();
        assert_eq!(fresh.denoise(&args(&x, &t, c4)).unwrap().data, after.data);
        fresh.diffusion_loss(x0.view(), c4, 7, 1.0).unwrap();
        let s2 = fresh.step(&cfg).unwrap();
        assert_eq!(s2.step, 2, "optimizer state resumed");
        assert!(s.ema && s2.ema, "the plugin keeps the moving average");
        // The average after the first update is a copy of the weights, saved in the
        // checkpoint's format: sampling from it reproduces the tuned model.
        let mut avg = SdPlugin::<Sd15>::create(
            &serde_json::json!({"weights": tmp.path().join("ema.safetensors").display().to_string()}),
        )
        .unwrap();
        let c5 = avg.encode_prompts(&["a horse".into()]).unwrap();
        assert_eq!(avg.denoise(&args(&x, &t, c5)).unwrap().data, after.data);
    }
}

fn rewrite_unet(
    dir: &std::path::Path,
    edit: impl Fn(&mut std::collections::HashMap<String, Tensor>),
) {
    let f = dir.join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&f, &Device::Cpu).unwrap();
    edit(&mut t);
    std::fs::remove_file(&f).unwrap();
    candle_core::safetensors::save(&t, &f).unwrap();
}

fn create_err<P: ModelPlugin>(dir: &std::path::Path) -> String {
    match P::create(&serde_json::json!({"weights": dir.display().to_string()})) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.0,
    }
}

#[test]
fn broken_or_foreign_pipelines_are_refused_with_names() {
    let Some(dir) = fixture("sd15") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    copy_dir(&dir, &missing);
    rewrite_unet(&missing, |t| {
        t.remove("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    });
    let e = create_err::<SdPlugin<Sd15>>(&missing);
    assert!(
        e.contains("unet")
            && e.contains("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
            && e.contains("lack"),
        "{e}"
    );

    let shaped = tmp.path().join("shaped");
    copy_dir(&dir, &shaped);
    // conv_in's real shape [out, in, k, k] from the file; a 1×1 kernel in its place.
    let real: Vec<usize> = candle_core::safetensors::load(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()["conv_in.weight"]
        .dims()
        .to_vec();
    let wrong = [real[0], real[1], 1, 1];
    rewrite_unet(&shaped, |t| {
        t.insert(
            "conv_in.weight".into(),
            Tensor::zeros(&wrong[..], candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = create_err::<SdPlugin<Sd15>>(&shaped);
    assert!(
        e.contains("conv_in.weight")
            && e.contains(&format!("{wrong:?}"))
            && e.contains(&format!("{real:?}")),
        "{e}"
    );

    let e = create_err::<SdPlugin<Sdxl>>(&dir);
    assert!(
        e.contains("StableDiffusionPipeline") && e.contains("sd15") && e.contains("`sdxl`"),
        "{e}"
    );
    let Some(sd3) = fixture("sd3") else { return };
    let e = create_err::<SdPlugin<Sd15>>(&sd3);
    assert!(
        e.contains("StableDiffusion3Pipeline") && e.contains("use `sd3`"),
        "{e}"
    );
    let e = create_err::<SdPlugin<Sd3>>(tmp.path());
    assert!(
        e.contains("no model_index.json") || e.contains("not a diffusers"),
        "{e}"
    );
}

/// Without weights each family resolves its usual repo id; offline and uncached, the error
/// names the repo, the files to fetch and the flag that passes a local copy.
#[test]
fn default_weights_are_the_usual_repos_and_offline_errors_say_what_to_fetch() {
    use adt_plugin_sd::pipeline::Family;
    let empty = tempfile::tempdir().unwrap();
    for (f, repo) in [
        (Family::Sd15, "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        (Family::Sdxl, "stabilityai/stable-diffusion-xl-base-1.0"),
        (
            Family::Sd3,
            "stabilityai/stable-diffusion-3-medium-diffusers",
        ),
    ] {
        assert_eq!(f.default_repo(), repo);
        let e = adt_plugin_sd::hub::resolve_in(repo, Some(empty.path()), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(repo)
                && e.contains("huggingface-cli download")
                && e.contains("model_index.json")
                && e.contains("--weights MODEL=PATH"),
            "{e}"
        );
    }
}
