//! SDXL at parity with diffusers on `shared/fixtures/diffusers-tiny/sdxl`: both text encoders
//! (penultimate hidden states, pooled projection), the `text_time` UNet at both timesteps and
//! its gradients (incl. the add-embedding), VAE decode / encode and decoder gradients.

use crate::common::*;
use adt_plugin_sd::clip::{ClipText, ClipTextConfig};
use adt_plugin_sd::load;
use adt_plugin_sd::unet::{AddedCond, UNet, UNetConfig};
use candle_core::{DType, Device, Tensor, Var};

fn clip(dir: &std::path::Path, name: &str, proj: bool) -> ClipText {
    let te = dir.join(name);
    let cfg: ClipTextConfig = load::config(&te).unwrap();
    let src = load::source(&te, name, None, DType::F32, &Device::Cpu).unwrap();
    let m = ClipText::load(&src.root(), &cfg, proj).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused {name} tensors: {:?}",
        src.unused()
    );
    m
}

#[test]
fn both_text_encoders_match_transformers_from_token_ids() {
    let Some(dir) = fixture("sdxl") else { return };
    let refs = reference(&dir);
    let dev = Device::Cpu;
    let (c1, c2) = (
        clip(&dir, "text_encoder", false),
        clip(&dir, "text_encoder_2", true),
    );
    let ids1 = ids(&r(&refs, "tokens.tokenizer.prompt"));
    let ids2 = ids(&r(&refs, "tokens.tokenizer_2.prompt"));
    let (o1, o2) = (
        c1.forward(&ids1, &dev).unwrap(),
        c2.forward(&ids2, &dev).unwrap(),
    );
    let embeds = Tensor::cat(&[&o1.penultimate, &o2.penultimate], 2).unwrap();
    close(
        "cond.prompt_embeds",
        &embeds,
        &r(&refs, "cond.prompt_embeds"),
        1e-5,
    );
    close(
        "cond.pooled_prompt_embeds",
        &o2.pooled,
        &r(&refs, "cond.pooled_prompt_embeds"),
        1e-5,
    );
    let n1 = ids(&r(&refs, "tokens.tokenizer.negative"));
    let n2 = ids(&r(&refs, "tokens.tokenizer_2.negative"));
    let (e1, e2) = (
        c1.forward(&n1, &dev).unwrap(),
        c2.forward(&n2, &dev).unwrap(),
    );
    let empty = Tensor::cat(&[&e1.penultimate, &e2.penultimate], 2).unwrap();
    close(
        "cond.empty_prompt_embeds",
        &empty,
        &r(&refs, "cond.empty_prompt_embeds"),
        1e-5,
    );
    close(
        "cond.empty_pooled_prompt_embeds",
        &e2.pooled,
        &r(&refs, "cond.empty_pooled_prompt_embeds"),
        1e-5,
    );
}

#[test]
fn text_time_unet_matches_diffusers_and_its_gradients() {
    let Some(dir) = fixture("sdxl") else { return };
    let refs = reference(&dir);
    let u = dir.join("unet");
    let cfg: UNetConfig = load::config(&u).unwrap();
    let (src, vars) = var_source(load::source(&u, "unet", None, DType::F32, &Device::Cpu).unwrap());
    let net = UNet::load(&src.root(), &cfg).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused unet tensors: {:?}",
        src.unused()
    );
    assert!(net.needs_added_cond());
    let x = r(&refs, "unet.x");
    let ctx = r(&refs, "unet.encoder_hidden_states");
    let added = AddedCond {
        text_embeds: r(&refs, "unet.text_embeds"),
        time_ids: r(&refs, "unet.time_ids"),
    };
    let ts: Vec<f32> = r(&refs, "unet.timesteps").to_vec1().unwrap();
    for (i, &t) in ts.iter().enumerate() {
        let out = net.forward(&x, &[t, t], &ctx, Some(&added)).unwrap();
        close(
            &format!("unet.out.{i}"),
            &out,
            &r(&refs, &format!("unet.out.{i}")),
            1e-5,
        );
    }
    assert!(
        net.forward(&x, &ts, &ctx, None).is_err(),
        "text_time without pooled text must fail"
    );

    let xv = Var::from_tensor(&x).unwrap();
    let cv = Var::from_tensor(&ctx).unwrap();
    let pv = Var::from_tensor(&added.text_embeds).unwrap();
    let a = AddedCond {
        text_embeds: pv.as_tensor().clone(),
        time_ids: added.time_ids.clone(),
    };
    let out = net
        .forward(xv.as_tensor(), &[ts[1], ts[1]], cv.as_tensor(), Some(&a))
        .unwrap();
    let c = r(&refs, "grad.unet.cotangent");
    let loss = close_sum(
        "grad.unet.loss",
        &out,
        &c,
        &r(&refs, "grad.unet.loss"),
        1e-6,
    );
    let grads = loss.backward().unwrap();
    let n = check_param_grads(&refs, "unet", &vars, &grads);
    assert!(n >= 15, "only {n} parameter gradients");
    close(
        "grad.unet.x",
        grads.get(xv.as_tensor()).unwrap(),
        &r(&refs, "grad.unet.x"),
        5e-5,
    );
    close(
        "grad.unet.encoder_hidden_states",
        grads.get(cv.as_tensor()).unwrap(),
        &r(&refs, "grad.unet.encoder_hidden_states"),
        5e-5,
    );
    close(
        "grad.unet.text_embeds",
        grads.get(pv.as_tensor()).unwrap(),
        &r(&refs, "grad.unet.text_embeds"),
        5e-5,
    );
}

#[test]
fn vae_matches_diffusers_with_the_sdxl_scaling() {
    let Some(dir) = fixture("sdxl") else { return };
    check_vae(&dir);
}
