//! Shared by `sample` and `run`: resolving `name:steps`, building plan requests from a model's
//! description, generating batches of images, writing PNGs and grids.

use std::path::Path;

use adt_plugin_api::{HostTensor, ModelDescription, Plan, PlanRequest, Spacing};
use adt_plugin_host::{Kind, Model, Registry, Samplers};
use anyhow::{Context, bail};
use image::RgbImage;

/// A parsed `name:steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerSpec {
    /// Sampler name.
    pub name: String,
    /// Steps.
    pub steps: usize,
}

impl std::str::FromStr for SamplerSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, steps) = s
            .split_once(':')
            .with_context(|| format!("sampler `{s}` must be written name:steps, e.g. ddim:20"))?;
        let steps: usize = steps
            .parse()
            .with_context(|| format!("sampler `{s}`: steps must be a positive integer"))?;
        if steps == 0 || steps > 10_000 {
            bail!("sampler `{s}`: steps must be between 1 and 10000");
        }
        Ok(SamplerSpec {
            name: name.to_string(),
            steps,
        })
    }
}

impl std::fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.steps)
    }
}

/// Parse a spacing name.
pub fn parse_spacing(s: &str) -> anyhow::Result<Spacing> {
    match s {
        "leading" => Ok(Spacing::Leading),
        "trailing" => Ok(Spacing::Trailing),
        "linspace" => Ok(Spacing::Linspace),
        other => bail!("unknown spacing `{other}` (leading, trailing or linspace)"),
    }
}

/// Find the sampler plugin that offers `name`.
pub fn find_sampler(reg: &Registry, name: &str) -> anyhow::Result<Samplers> {
    let mut all = Vec::new();
    for p in reg.of_kind(Kind::Sampler) {
        let s = Samplers::new(p)?;
        let list = s.list()?;
        if list.iter().any(|i| i.name == name) {
            return Ok(s);
        }
        all.extend(list.into_iter().map(|i| i.name));
    }
    bail!("no sampler named `{name}` (available: {})", all.join(", "))
}

/// The plan request for a model and sampler.
pub fn request(
    desc: &ModelDescription,
    spec: &SamplerSpec,
    spacing: Option<Spacing>,
    start_index: usize,
) -> PlanRequest {
    PlanRequest {
        sampler: spec.name.clone(),
        steps: spec.steps,
        schedule: desc.schedule.clone(),
        parameterization: desc.parameterization,
        spacing: spacing.or((!desc.sampler_default_spacing).then_some(desc.default_spacing)),
        steps_offset: desc.steps_offset,
        start_index,
        eta: 0.0,
        set_alpha_to_one: desc.set_alpha_to_one,
        img2img: false,
    }
}

/// Build a plan: text-to-image, or with `img2img = Some(s)` from a noised image at index s.
pub fn plan(
    reg: &Registry,
    desc: &ModelDescription,
    spec: &SamplerSpec,
    spacing: Option<Spacing>,
    img2img: Option<usize>,
) -> anyhow::Result<Plan> {
    let samplers = find_sampler(reg, &spec.name)?;
    let mut req = request(desc, spec, spacing, img2img.unwrap_or(0));
    req.img2img = img2img.is_some();
    samplers
        .plan(&req)
        .with_context(|| format!("failed to plan {spec}"))
}

/// The first `n` images of the built-in evaluation split (the images whose captions
/// [`eval_prompts`] returns) at `size`, as `[n, 3, size, size]` in [-1, 1].
pub fn eval_images(n: usize, size: u32) -> anyhow::Result<HostTensor> {
    let spec = adt_datasets::DataSpec::Shapes {
        config: adt_datasets::shapes::ShapesConfig::DEFAULT,
        offset: adt_datasets::shapes::EVAL_OFFSET,
    };
    load_images(&spec, n, size)
}

/// Up to `n` images of a source, resized and centre-cropped to `size`, as
/// `[count, 3, size, size]` in [-1, 1]. An unreadable record is a [`DataError`] naming it.
pub fn load_images(
    spec: &adt_datasets::DataSpec,
    n: usize,
    size: u32,
) -> anyhow::Result<HostTensor> {
    let mut data = Vec::new();
    let mut count = 0;
    for r in adt_datasets::open_resized(spec, size)?.take(n) {
        let rec = r.map_err(|e| crate::exit::DataError(e.to_string()))?;
        data.extend(adt_datasets::transform::to_chw_signed(&rec.image));
        count += 1;
    }
    Ok(HostTensor {
        shape: vec![count, 3, size as usize, size as usize],
        data,
    })
}

/// Read `latents` [N, C, H, W] from a safetensors file.
pub fn read_init_latents(path: &Path, latent_shape: [usize; 3]) -> anyhow::Result<HostTensor> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let t = st.tensor("latents").with_context(|| {
        format!(
            "{} has no tensor named `latents` (found {:?})",
            path.display(),
            st.names()
        )
    })?;
    let shape = t.shape().to_vec();
    if shape.len() != 4 || shape[1..] != latent_shape {
        bail!(
            "`latents` in {} has shape {shape:?}; the model needs [N, {}, {}, {}]",
            path.display(),
            latent_shape[0],
            latent_shape[1],
            latent_shape[2]
        );
    }
    let data: Vec<f32> = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::BF16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("`latents` has dtype {other:?}; use f32, f16 or bf16"),
    };
    Ok(HostTensor { shape, data })
}

/// Rows `[start, start + n)` of a batch-major tensor.
pub fn slice_batch(t: &HostTensor, start: usize, n: usize) -> HostTensor {
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = n;
    HostTensor {
        shape,
        data: t.data[start * per..(start + n) * per].to_vec(),
    }
}

/// Generate `prompts.len()` images in batches, with a progress bar labelled `label`.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &mut Model,
    plan: &Plan,
    desc: &ModelDescription,
    prompts: &[String],
    guidance: f32,
    batch: usize,
    seed: u64,
    init: Option<&HostTensor>,
    x0: Option<&HostTensor>,
    label: &str,
    quiet: bool,
) -> anyhow::Result<Vec<RgbImage>> {
    let batches = prompts.len().div_ceil(batch.max(1)) as u64;
    let bar = crate::progress::Bar::new(plan.evals.len() as u64 * batches, label, quiet);
    let uncond = if guidance != 1.0 {
        Some(model.encode_prompts(&[String::new()])?)
    } else {
        None
    };
    let mut images = Vec::with_capacity(prompts.len());
    let [c, h, w] = desc.latent_shape;
    // The initial noise of image i depends only on (seed, i), so a result does not depend on
    // the batch size; per-step noise of stochastic samplers is drawn per batch.
    let drawn;
    let init = match init {
        Some(t) => t,
        None => {
            drawn = initial_noise(prompts.len(), [c, h, w], seed);
            &drawn
        }
    };
    for (bi, chunk) in prompts.chunks(batch.max(1)).enumerate() {
        let start = bi * batch.max(1);
        let n = chunk.len();
        let cond = model.encode_prompts(chunk)?;
        let mut rng = adt_tuner::rollout::rng(
            seed.wrapping_add(bi as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        let noise = slice_batch(init, start, n);
        let x0 = x0.map(|t| slice_batch(t, start, n));
        let trace = adt_tuner::rollout::run(
            model,
            plan,
            &[n, c, h, w],
            x0.as_ref(),
            Some(&noise),
            adt_tuner::rollout::Guidance {
                cond,
                uncond,
                scale: guidance,
            },
            &mut rng,
            |_, _| bar.inc(),
        )?;
        model.release(cond)?;
        let decoded = model.decode(trace.result())?;
        let [_, ih, iw] = desc.image_shape;
        let per = 3 * ih * iw;
        for i in 0..n {
            images.push(adt_datasets::transform::from_chw_signed(
                &decoded.data[i * per..(i + 1) * per],
                iw as u32,
                ih as u32,
            ));
        }
    }
    if let Some(u) = uncond {
        model.release(u)?;
    }
    bar.finish();
    Ok(images)
}

/// Initial noise for `n` images: image i from its own RNG seeded by (seed, i).
pub fn initial_noise(n: usize, latent: [usize; 3], seed: u64) -> HostTensor {
    let per: usize = latent.iter().product();
    let mut data = Vec::with_capacity(n * per);
    for i in 0..n as u64 {
        let mut rng = adt_tuner::rollout::rng(seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        data.extend(adt_tuner::rollout::gaussian(&latent, &mut rng).data);
    }
    HostTensor {
        shape: vec![n, latent[0], latent[1], latent[2]],
        data,
    }
}

/// A grid of images (ceil(√n) columns, 2-pixel gutters).
pub fn grid(images: &[RgbImage]) -> RgbImage {
    let n = images.len().max(1);
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((1, 1));
    let g = 2;
    let mut out = RgbImage::from_pixel(
        cols * (w + g) + g,
        rows * (h + g) + g,
        image::Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let (cx, cy) = (i as u32 % cols, i as u32 / cols);
        image::imageops::overlay(
            &mut out,
            img,
            (g + cx * (w + g)) as i64,
            (g + cy * (h + g)) as i64,
        );
    }
    out
}

/// Prompts of the built-in data set's evaluation split (offset 10⁶, disjoint from training).
pub fn eval_prompts(n: usize) -> Vec<String> {
    let cfg = adt_datasets::shapes::ShapesConfig::DEFAULT;
    (0..n as u64)
        .map(|i| adt_datasets::shapes::generate(cfg, adt_datasets::shapes::EVAL_OFFSET + i).caption)
        .collect()
}

/// Write images as `000000.png`… plus `prompts.txt`. The folder holds no other image, so it
/// can be given to `fid` or `probe` as it is (they read every image under a folder).
pub fn write_images(dir: &Path, images: &[RgbImage], prompts: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (i, img) in images.iter().enumerate() {
        let p = dir.join(format!("{i:06}.png"));
        img.save(&p)
            .with_context(|| format!("failed to write {}", p.display()))?;
    }
    std::fs::write(dir.join("prompts.txt"), prompts.join("\n") + "\n")
        .with_context(|| format!("failed to write {}", dir.join("prompts.txt").display()))?;
    Ok(())
}

/// Whether `name` is a file of a sample folder: an image [`write_images`] names
/// (`NNNNNN.png`), `prompts.txt`, or `sample.json` (`cells::finish_samples`).
pub fn is_sample_file(name: &str) -> bool {
    matches!(name, "prompts.txt" | "sample.json")
        || name
            .strip_suffix(".png")
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Write a grid of the first images to `path` (its folder is created).
pub fn write_grid(path: &Path, images: &[RgbImage]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    grid(images)
        .save(path)
        .with_context(|| format!("failed to write {}", path.display()))
}
