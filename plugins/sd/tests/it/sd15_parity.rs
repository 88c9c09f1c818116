//! SD 1.5 at parity with diffusers on `shared/fixtures/diffusers-tiny/sd15`: text conditioning,
//! the UNet at both timesteps and its gradients, VAE decode / encode and decoder gradients.
//! Tolerances are the fixture README's (relative to the reference's max).

use crate::common::*;
use adt_plugin_sd::clip::{ClipText, ClipTextConfig};
use adt_plugin_sd::load;
use adt_plugin_sd::unet::{UNet, UNetConfig};
use candle_core::{DType, Device, Var};

#[test]
fn text_encoder_matches_transformers_from_token_ids() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let dev = Device::Cpu;
    let te = dir.join("text_encoder");
    let cfg: ClipTextConfig = load::config(&te).unwrap();
    let src = load::source(&te, "text_encoder", None, DType::F32, &dev).unwrap();
    let clip = ClipText::load(&src.root(), &cfg, false).unwrap();
    for (tok, cond) in [
        ("prompt", "cond.prompt_embeds"),
        ("negative", "cond.negative_prompt_embeds"),
    ] {
        let ids = ids(&r(&refs, &format!("tokens.tokenizer.{tok}")));
        let out = clip.forward(&ids, &dev).unwrap();
        close(cond, &out.last_hidden, &r(&refs, cond), 1e-5);
    }
}

fn unet(dir: &std::path::Path) -> (UNet, std::collections::HashMap<String, Var>) {
    let u = dir.join("unet");
    let cfg: UNetConfig = load::config(&u).unwrap();
    let src = load::source(&u, "unet", None, DType::F32, &Device::Cpu).unwrap();
    let (src, vars) = var_source(src);
    let net = UNet::load(&src.root(), &cfg).unwrap();
    assert!(
        src.unused().is_empty(),
        "unused unet tensors: {:?}",
        src.unused()
    );
    (net, vars)
}

#[test]
fn unet_matches_diffusers_at_both_timesteps_and_in_its_gradients() {
    let Some(dir) = fixture("sd15") else { return };
    let refs = reference(&dir);
    let (net, vars) = unet(&dir);
    let x = r(&refs, "unet.x");
    let ctx = r(&refs, "unet.encoder_hidden_states");
    let ts: Vec<f32> = r(&refs, "unet.timesteps").to_vec1().unwrap();
    for (i, &t) in ts.iter().enumerate() {
        let out = net.forward(&x, &[t, t], &ctx, None).unwrap();
        close(
            &format!("unet.out.{i}"),
            &out,
            &r(&refs, &format!("unet.out.{i}")),
            1e-5,
        );
    }
    // Gradients of L = Σ out(x, t₁, ctx) · c.
    let xv = Var::from_tensor(&x).unwrap();
    let cv = Var::from_tensor(&ctx).unwrap();
    let out = net
        .forward(xv.as_tensor(), &[ts[1], ts[1]], cv.as_tensor(), None)
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
    assert!(n >= 15, "only {n} parameter gradients in the reference");
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
}

#[test]
fn vae_matches_diffusers_decode_encode_and_decoder_gradients() {
    let Some(dir) = fixture("sd15") else { return };
    check_vae(&dir);
}
