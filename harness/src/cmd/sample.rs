//! `adt-bench sample`: generate images with a model and a sampler.

use anyhow::Context;

use crate::cli::{GlobalOpts, SampleArgs};
use crate::sampling::{self, SamplerSpec};

pub fn run(g: &GlobalOpts, a: &SampleArgs) -> anyhow::Result<()> {
    let spec: SamplerSpec = a.sampler.parse()?;
    let spacing = a
        .spacing
        .as_deref()
        .map(sampling::parse_spacing)
        .transpose()?;
    let reg = crate::registry::load(&g.plugin_path)?;
    let mut model = super::open_model(&reg, &a.model)?;
    let desc = model.describe()?;
    let plan = sampling::plan(&reg, &desc, &spec, spacing, a.img2img)?;
    let init = a
        .init_latents
        .as_deref()
        .map(|p| sampling::read_init_latents(p, desc.latent_shape))
        .transpose()?;
    let n = match &init {
        Some(t) if t.shape[0] != a.num => {
            eprintln!(
                "note: --init-latents holds {} latents; generating that many images",
                t.shape[0]
            );
            t.shape[0]
        }
        _ => a.num,
    };
    if n == 0 {
        anyhow::bail!("nothing to generate (-n 0)");
    }
    let prompts = match &a.prompt {
        Some(p) => vec![p.clone(); n],
        None => sampling::eval_prompts(n),
    };
    let guidance = a.guidance.unwrap_or(desc.default_guidance);
    let x0 = match a.img2img {
        Some(_) => {
            let [_, ih, iw] = desc.image_shape;
            if ih != iw {
                anyhow::bail!("--img2img needs a square image model, not {ih}×{iw}");
            }
            let images = sampling::eval_images(n, ih as u32)?;
            Some(model.encode_images(&images)?)
        }
        None => None,
    };
    let out = sampling::generate(
        &mut model,
        &plan,
        &desc,
        &prompts,
        guidance,
        a.batch,
        a.seed,
        init.as_ref(),
        x0.as_ref(),
        "sample",
        g.quiet,
    )?;
    sampling::write_images(&a.out, &out, &prompts)?;
    if let Some(gp) = &a.grid {
        sampling::write_grid(gp, &out)?;
    }
    let meta = serde_json::json!({
        "model": desc.name, "weights_hash": desc.weights_hash, "sampler": spec.to_string(),
        "spacing": plan_spacing(&a.spacing, &desc), "guidance": guidance, "seed": a.seed, "n": n, "batch": a.batch,
        "timesteps": plan.timesteps, "init_latents": a.init_latents, "img2img_start": a.img2img,
    });
    std::fs::write(
        a.out.join("sample.json"),
        serde_json::to_string_pretty(&meta)?,
    )
    .with_context(|| format!("failed to write {}", a.out.display()))?;
    match &a.grid {
        Some(gp) => println!(
            "wrote {n} images to {} and a grid to {}",
            a.out.display(),
            gp.display()
        ),
        None => println!("wrote {n} images to {}", a.out.display()),
    }
    Ok(())
}

fn plan_spacing(
    cli: &Option<String>,
    desc: &adt_plugin_api::ModelDescription,
) -> serde_json::Value {
    match cli {
        Some(s) => serde_json::json!(s),
        None if desc.sampler_default_spacing => serde_json::json!("sampler default"),
        None => serde_json::to_value(desc.default_spacing).unwrap_or_default(),
    }
}
