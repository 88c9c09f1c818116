//! SD3 at parity with diffusers on `shared/fixtures/diffusers-tiny/sd3`: CLIP-L, CLIP-G and T5
//! conditioning, the MMDiT at both timesteps and its gradients, the 16-channel VAE with shift
//! and scale.

use crate::common::*;
use adt_plugin_sd::clip::{ClipText, ClipTextConfig};
use adt_plugin_sd::load;
use adt_plugin_sd::mmdit::{Mmdit, MmditConfig};
use adt_plugin_sd::t5::{T5Config, T5Encoder};
use candle_core::{DType, Device, Tensor, Var};

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
        // Row counts and widths from the tensors: CLIP rows first, then T5's.
        let n_clip = ol.penultimate.dim(1).unwrap();
        let (n_t5, tw) = (ot.dim(1).unwrap(), ot.dim(2).unwrap());
        assert_eq!(
            want.dims()[1..],
            [n_clip + n_t5, tw],
            "{emb}: rows and width"
        );
        let clip_cat = Tensor::cat(&[&ol.penultimate, &og.penultimate], 2).unwrap();
        let w = clip_cat.dim(2).unwrap().min(tw);
        close(
            &format!("{emb} clip rows"),
            &clip_cat.narrow(2, 0, w).unwrap(),
            &want.narrow(1, 0, n_clip).unwrap().narrow(2, 0, w).unwrap(),
            1e-5,
        );
        close(
            &format!("{emb} t5 rows"),
            &ot,
            &want.narrow(1, n_clip, n_t5).unwrap(),
            1e-5,
        );
        // The pipeline's joint context (pad or crop to the T5 width), as the plugin builds it.
        close(
            &format!("{emb} joint context"),
            &adt_plugin_sd::pipeline::sd3_joint_context(&clip_cat, &ot).unwrap(),
            &want,
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

/// diffusers pads the CLIP rows to the T5 width with `F.pad(x, (0, t5_w − clip_w))`; when the
/// CLIP width is larger the amount is negative and the pad crops. Both directions, on small
/// tensors whose widths are drawn on either side of the T5 width.
#[test]
fn joint_context_pads_or_crops_the_clip_rows_to_the_t5_width() {
    use adt_plugin_sd::pipeline::sd3_joint_context;
    let dev = Device::Cpu;
    let t5 = Tensor::arange(0f32, 2.0 * 5.0 * 6.0, &dev)
        .unwrap()
        .reshape((2, 5, 6))
        .unwrap();
    for cw in [4usize, 6, 9] {
        let clip = (Tensor::arange(0f32, (2 * 3 * cw) as f32, &dev)
            .unwrap()
            .reshape((2, 3, cw))
            .unwrap()
            + 1000.0)
            .unwrap();
        let ctx = sd3_joint_context(&clip, &t5).unwrap();
        assert_eq!(ctx.dims(), [2, 8, 6], "clip width {cw}");
        let head = ctx.narrow(1, 0, 3).unwrap();
        let keep = cw.min(6);
        assert_eq!(
            head.narrow(2, 0, keep).unwrap().to_vec3::<f32>().unwrap(),
            clip.narrow(2, 0, keep).unwrap().to_vec3::<f32>().unwrap()
        );
        if cw < 6 {
            let pad = head.narrow(2, cw, 6 - cw).unwrap();
            assert_eq!(
                pad.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
        }
        assert_eq!(
            ctx.narrow(1, 3, 5).unwrap().to_vec3::<f32>().unwrap(),
            t5.to_vec3::<f32>().unwrap()
        );
    }
}
