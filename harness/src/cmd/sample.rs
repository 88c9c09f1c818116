//! `adt-bench sample`: generate images with a model and a sampler.

use crate::cli::{GlobalOpts, SampleArgs};
use crate::engine::cells::{self, SampleJob};
use crate::sampling;

pub fn run(g: &GlobalOpts, a: &SampleArgs) -> anyhow::Result<()> {
    let model = a.model.spec()?;
    let spacing = a
        .spacing
        .as_deref()
        .map(sampling::parse_spacing)
        .transpose()?;
    let reg = crate::registry::load(&g.plugin_path)?;
    let mut instance = model.open(&reg)?;
    let desc = instance.describe()?;
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
    let img2img = match a.img2img {
        Some(start) => {
            let [_, ih, iw] = desc.image_shape;
            if ih != iw {
                anyhow::bail!("--img2img needs a square image model, not {ih}×{iw}");
            }
            Some((sampling::eval_images(n, ih as u32)?, start))
        }
        None => None,
    };
    let job = SampleJob {
        model,
        sampler: match &a.sampler {
            Some(s) => s.parse()?,
            None => crate::engine::plan::default_sampler(&reg, &desc, "ddim:20")?,
        },
        spacing,
        guidance: a.guidance,
        prompts,
        batch: a.batch,
        seed: a.seed,
        init,
        img2img,
    };
    let done =
        cells::sample_images_with(&reg, &mut instance, &desc, &job, &a.out, "sample", g.quiet)?;
    if let Some(gp) = &a.grid {
        sampling::write_grid(gp, &done.images)?;
    }
    let mut meta = done.meta;
    meta["spacing"] = plan_spacing(&a.spacing, &meta["spacing"]);
    meta["init_latents"] = serde_json::json!(a.init_latents);
    cells::finish_samples(&a.out, &meta)?;
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

/// The spacing as the user wrote it, else as the plan used it.
fn plan_spacing(cli: &Option<String>, used: &serde_json::Value) -> serde_json::Value {
    match cli {
        Some(s) => serde_json::json!(s),
        None => used.clone(),
    }
}
