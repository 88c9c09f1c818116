//! SD3 at parity with diffusers on `shared/fixtures/diffusers-tiny/sd3`: CLIP-L, CLIP-G and T5
//! conditioning, the MMDiT at both timesteps and its gradients, the 16-channel VAE with shift
//! and scale.

mod common;

use adt_plugin_sd::clip::{ClipText, ClipTextConfig};
use adt_plugin_sd::load;
use adt_plugin_sd::mmdit::{Mmdit, MmditConfig};
use adt_plugin_sd::t5::{T5Config, T5Encoder};
use candle_core::{DType, Device, Tensor, Var};
use common::*;

fn clip(dir: &std::path::Path, name: &str) -> ClipText {
    let te = dir.join(name);
    let cfg: ClipTextConfig = load::config(&te).unwrap();
    let src = load::source(&te, name, None, DType::F32, &Device::Cpu).unwrap();
    ClipText::load(&src.root(), &cfg, true).unwrap()
}

#[test]
fn clip_l_clip_g_and_t5_conditioning_matches_the_pipeline() {
    let Some(dir) = fixture("sd3") else { return };
    let refs = reference(&dir);
    let dev = Device::Cpu;
    let (l, g) = (clip(&dir, "text_encoder"), clip(&dir, "text_encoder_2"));
    let te3 = dir.join("text_encoder_3");
    let cfg: T5Config = load::config(&te3).unwrap();
    let src = load::source(&te3, "text_encoder_3", None, DType::F32, &dev).unwrap();
    let t5 = T5Encoder::load(&src.root(), &cfg).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused T5 tensors: {:?}",
        src.unused()
    );
    for (which, emb, pooled) in [
        ("prompt", "cond.prompt_embeds", "cond.pooled_prompt_embeds"),
        (
            "negative",
            "cond.negative_prompt_embeds",
            "cond.negative_pooled_prompt_embeds",
        ),
    ] {
        let ol = l
            .forward(&ids(&r(&refs, &format!("tokens.tokenizer.{which}"))), &dev)
            .unwrap();
        let og = g
            .forward(
                &ids(&r(&refs, &format!("tokens.tokenizer_2.{which}"))),
                &dev,
            )
            .unwrap();
        let ot = t5
            .forward(
                &ids(&r(&refs, &format!("tokens.tokenizer_3.{which}"))),
                &dev,
            )
            .unwrap();
        let want = r(&refs, emb);
        let clip_cat = Tensor::cat(&[&ol.penultimate, &og.penultimate], 2).unwrap();
        let w = clip_cat.dim(2).unwrap();
        close(
            &format!("{emb} clip rows"),
            &clip_cat,
            &want.narrow(1, 0, 77).unwrap().narrow(2, 0, w).unwrap(),
            1e-5,
        );
        close(
            &format!("{emb} t5 rows"),
            &ot,
            &want.narrow(1, 77, 256).unwrap(),
            1e-5,
        );
        let p = Tensor::cat(&[&ol.pooled, &og.pooled], 1).unwrap();
        close(pooled, &p, &r(&refs, pooled), 1e-5);
    }
}

#[test]
fn mmdit_matches_diffusers_at_both_timesteps_and_its_gradients() {
    let Some(dir) = fixture("sd3") else { return };
    let refs = reference(&dir);
    let t = dir.join("transformer");
    let cfg: MmditConfig = load::config(&t).unwrap();
    let (src, vars) =
        var_source(load::source(&t, "transformer", None, DType::F32, &Device::Cpu).unwrap());
    let net = Mmdit::load(&src.root(), &cfg).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused transformer tensors: {:?}",
        src.unused()
    );
    let x = r(&refs, "transformer.x");
    let ctx = r(&refs, "transformer.encoder_hidden_states");
    let pooled = r(&refs, "transformer.pooled_projections");
    let ts: Vec<f32> = r(&refs, "transformer.timesteps").to_vec1().unwrap();
    for (i, &ti) in ts.iter().enumerate() {
        let out = net.forward(&x, &[ti, ti], &ctx, &pooled).unwrap();
        close(
            &format!("transformer.out.{i}"),
            &out,
            &r(&refs, &format!("transformer.out.{i}")),
            1e-5,
        );
    }
    let xv = Var::from_tensor(&x).unwrap();
    let cv = Var::from_tensor(&ctx).unwrap();
    let pv = Var::from_tensor(&pooled).unwrap();
    let out = net
        .forward(
            xv.as_tensor(),
            &[ts[1], ts[1]],
            cv.as_tensor(),
            pv.as_tensor(),
        )
        .unwrap();
    let c = r(&refs, "grad.transformer.cotangent");
    let loss = close_sum(
        "grad.transformer.loss",
        &out,
        &c,
        &r(&refs, "grad.transformer.loss"),
        1e-6,
    );
    let grads = loss.backward().unwrap();
    let n = check_param_grads(&refs, "transformer", &vars, &grads);
    assert!(n >= 13, "only {n} parameter gradients");
    for (name, v) in [
        ("x", &xv),
        ("encoder_hidden_states", &cv),
        ("pooled_projections", &pv),
    ] {
        let key = format!("grad.transformer.{name}");
        close(
            &key,
            grads.get(v.as_tensor()).unwrap(),
            &r(&refs, &key),
            5e-5,
        );
    }
}

#[test]
fn sixteen_channel_vae_with_shift_and_scale_matches_diffusers() {
    let Some(dir) = fixture("sd3") else { return };
    check_vae(&dir);
}
