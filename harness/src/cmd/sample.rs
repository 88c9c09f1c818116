//! `adt-bench sample`: generate images with a model and a sampler.

use crate::cli::{GlobalOpts, SampleArgs};
use crate::engine::cells::{self, SampleJob};
use crate::sampling;

pub fn run(g: &GlobalOpts, a: &SampleArgs) -> anyhow::Result<()> {
    prepare_out(&a.out, a.overwrite)?;
    let model = a.model.spec()?;
    let spacing = a
        .spacing
        .as_deref()
        .map(sampling::parse_spacing)
        .transpose()?;
    let reg = crate::registry::load(g)?;
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

/// Make `out` ready for a new sample set: absent or empty is fine; an earlier sample folder is
/// refused unless `overwrite`, which deletes its files; a folder with anything else in it
/// (sub-folders, other files) is refused either way, so nothing of the user's is deleted and
/// no stale image is mixed into the new set.
fn prepare_out(out: &std::path::Path, overwrite: bool) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let entries = match std::fs::read_dir(out) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", out.display())),
    };
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", out.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && sampling::is_sample_file(&name) {
            ours.push(e.path());
        } else {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let more = foreign.len().saturating_sub(3);
        foreign.truncate(3);
        bail!(
            "--out {} holds files `sample` did not write ({}{}); choose an empty or new folder",
            out.display(),
            foreign.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if ours.is_empty() {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "--out {} already holds an earlier sample set ({} files); choose another folder or \
             pass --overwrite to replace it",
            out.display(),
            ours.len()
        );
    }
    for p in ours {
        std::fs::remove_file(&p).with_context(|| format!("cannot delete {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_sample_set_is_refused_or_replaced_and_nothing_else_is_touched() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("s");
        prepare_out(&out, false).unwrap();
        std::fs::create_dir(&out).unwrap();
        prepare_out(&out, false).unwrap();
        for f in ["000000.png", "000001.png", "prompts.txt", "sample.json"] {
            std::fs::write(out.join(f), b"x").unwrap();
        }
        let e = prepare_out(&out, false).unwrap_err().to_string();
        assert!(e.contains("--overwrite") && e.contains("4 files"), "{e}");
        prepare_out(&out, true).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // Anything else: refused, with or without --overwrite, and left in place.
        std::fs::write(out.join("000000.png"), b"x").unwrap();
        std::fs::write(out.join("notes.md"), b"mine").unwrap();
        std::fs::create_dir(out.join("sub")).unwrap();
        for overwrite in [false, true] {
            let e = prepare_out(&out, overwrite).unwrap_err().to_string();
            assert!(e.contains("notes.md, sub"), "{e}");
        }
        assert!(out.join("notes.md").exists() && out.join("000000.png").exists());
        assert!(
            sampling::is_sample_file("123456.png")
                && !sampling::is_sample_file(".png")
                && !sampling::is_sample_file("a.png")
        );
    }
}
