//! `adt-bench run`: the benchmark. At this stage (foundation) it runs the sampling stage on
//! the embedded default: `tiny` with few-step samplers and a many-step reference, scored with
//! the built-in data set's recognisability controls.

use std::fmt::Write as _;

use anyhow::Context;

use crate::cli::{GlobalOpts, RunArgs};
use crate::sampling::{self, SamplerSpec};

#[derive(Debug, serde::Serialize)]
struct Row {
    sampler: String,
    role: &'static str,
    n: usize,
    background_accuracy: f64,
    color_accuracy: f64,
    residual_noise: f64,
    seconds: f64,
}

fn score(images: &[image::RgbImage], prompts: &[String]) -> (f64, f64, f64) {
    let (mut bg, mut col, mut noise, mut n) = (0.0, 0.0, 0.0, 0.0);
    for (img, p) in images.iter().zip(prompts) {
        if let Some(s) = adt_datasets::shapes_score::score(img, p) {
            bg += s.background_ok as u8 as f64;
            col += s.color_ok as u8 as f64;
            noise += s.noise;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (bg / n, col / n, noise / n)
}

pub fn run(g: &GlobalOpts, a: &RunArgs) -> anyhow::Result<()> {
    let few: Vec<SamplerSpec> = a
        .eval_samplers
        .iter()
        .map(|s| s.parse())
        .collect::<anyhow::Result<_>>()?;
    let reference: SamplerSpec = a.reference_sampler.parse()?;
    if a.num == 0 {
        anyhow::bail!("-n must be at least 1");
    }
    let reg = crate::registry::load(&g.plugin_path)?;
    let mut model = super::open_model(&reg, &a.model)?;
    let desc = model.describe()?;
    let guidance = a.guidance.unwrap_or(desc.default_guidance);
    let prompts = sampling::eval_prompts(a.num);
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("failed to create {}", a.out.display()))?;

    // Real images of the same captions: the controls' values on data.
    let cfg = adt_datasets::shapes::ShapesConfig::DEFAULT;
    let real: Vec<image::RgbImage> = (0..a.num as u64)
        .map(|i| adt_datasets::shapes::generate(cfg, adt_datasets::shapes::EVAL_OFFSET + i).image)
        .collect();
    sampling::write_images(&a.out.join("real"), &real, &prompts)?;
    sampling::write_grid(&a.out.join("grids").join("real.png"), &real)?;
    let (rb, rc, rn) = score(&real, &prompts);
    let mut rows = vec![Row {
        sampler: "data".into(),
        role: "real images",
        n: a.num,
        background_accuracy: rb,
        color_accuracy: rc,
        residual_noise: rn,
        seconds: 0.0,
    }];

    // The initial noise of image i depends only on (seed, i): every sampler starts from the
    // same noise, so differences are the sampler's.
    let specs: Vec<(SamplerSpec, &'static str)> = few
        .into_iter()
        .map(|s| (s, "few-step"))
        .chain(std::iter::once((reference, "many-step reference")))
        .collect();
    for (spec, role) in &specs {
        let plan = sampling::plan(&reg, &desc, spec, None, None)?;
        let t0 = std::time::Instant::now();
        let out = sampling::generate(
            &mut model,
            &plan,
            &desc,
            &prompts,
            guidance,
            a.batch,
            a.seed,
            None,
            None,
            &spec.to_string(),
            g.quiet,
        )?;
        let secs = t0.elapsed().as_secs_f64();
        let name = spec.to_string().replace(':', "-");
        sampling::write_images(&a.out.join(&name), &out, &prompts)?;
        sampling::write_grid(&a.out.join("grids").join(format!("{name}.png")), &out)?;
        let (b, cacc, nz) = score(&out, &prompts);
        rows.push(Row {
            sampler: spec.to_string(),
            role,
            n: a.num,
            background_accuracy: b,
            color_accuracy: cacc,
            residual_noise: nz,
            seconds: secs,
        });
    }

    let mut md = String::new();
    writeln!(md, "# adt-bench run — sampling stage\n")?;
    writeln!(
        md,
        "Model `{}` (weights {}), guidance {guidance}, {} images per sampler, seed {}, same prompts and initial noise for every sampler.\n",
        desc.name,
        desc.weights_hash
            .as_deref()
            .map(|h| &h[..12.min(h.len())])
            .unwrap_or("random"),
        a.num,
        a.seed
    )?;
    writeln!(
        md,
        "| sampler | role | background acc. | shape-colour acc. | residual noise | seconds |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.2} | {:.1} |",
            r.sampler, r.role, r.background_accuracy, r.color_accuracy, r.residual_noise, r.seconds
        )?;
    }
    writeln!(
        md,
        "\nBackground / shape-colour accuracy: the image's border colour / a region of the shape's colour match the caption. Residual noise: mean |pixel − 3×3 box blur| (0–255). FID and the tuning stages are not part of this run yet."
    )?;
    std::fs::write(a.out.join("summary.md"), &md)?;
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    print!("{md}");
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
