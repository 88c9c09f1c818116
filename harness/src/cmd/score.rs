//! `adt-bench score`: the CLIP-based quality and preference metrics of an image folder.

use anyhow::Context;
use serde_json::json;

use crate::cli::{GlobalOpts, ScoreArgs};
use crate::engine::scores::{
    ImageFiles, image_files, load_scorers, parse_metrics, read_prompts, score_set, sources,
};
use crate::exit::DataError;

pub fn run(g: &GlobalOpts, a: &ScoreArgs) -> anyhow::Result<()> {
    let metrics = parse_metrics(&a.metric)?;
    let files = image_files(&a.dir)?;
    if files.is_empty() {
        return Err(DataError(format!("{}: no png / jpg / webp images", a.dir.display())).into());
    }
    let needs_prompts = metrics.iter().any(|m| m.needs_prompts());
    let prompts = if needs_prompts {
        let p = a
            .prompts
            .clone()
            .unwrap_or_else(|| a.dir.join("prompts.txt"));
        if a.prompts.is_none() && !p.is_file() {
            return Err(DataError(format!(
                "{} need prompts: pass --prompts FILE (one line per image) or put prompts.txt in {}",
                metrics
                    .iter()
                    .filter(|m| m.needs_prompts())
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                a.dir.display()
            ))
            .into());
        }
        Some(read_prompts(&p, files.len(), &a.dir)?)
    } else {
        None
    };
    let images = ImageFiles(&files);
    let device = crate::device::open(&a.device)?;
    let scorers = load_scorers(&metrics, &sources(&a.models), &device, g.quiet)?;
    let results = score_set(
        &scorers,
        &images,
        prompts.as_deref(),
        a.batch,
        a.bootstrap,
        a.seed,
        g.quiet,
    )?;
    if let Some(p) = &a.per_image {
        let mut w =
            csv::Writer::from_path(p).with_context(|| format!("cannot write {}", p.display()))?;
        let mut header = vec!["image".to_string()];
        for r in &results {
            header.push(r.scores.metric.to_string());
            if r.scores.preference.is_some() {
                header.push(format!("{}_preference", r.scores.metric));
            }
        }
        w.write_record(&header)?;
        for (i, f) in files.iter().enumerate() {
            let mut row = vec![
                f.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ];
            for r in &results {
                row.push(format!("{}", r.scores.per_sample[i]));
                if let Some(p) = &r.scores.preference {
                    row.push(format!("{}", p[i]));
                }
            }
            w.write_record(&row)?;
        }
        w.flush()?;
    }
    if a.json {
        let out = json!({
            "dir": a.dir.display().to_string(),
            "n": files.len(),
            "images": files.iter().map(|f| f.file_name().map(|n| n.to_string_lossy().to_string())).collect::<Vec<_>>(),
            "metrics": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} image(s) in {}", files.len(), a.dir.display());
        println!(
            "{:<10} {:>12}  {:<26} notes",
            "metric", "value", "95% interval"
        );
        for r in &results {
            let note = match (r.scores.metric, &r.version) {
                ("clipscore", _) => "torchmetrics: max(mean 100·cos, 0)".to_string(),
                ("pickscore", _) => "exp(logit_scale)·cos".to_string(),
                ("hpsv2", Some(v)) => {
                    format!("HPS {v} (raw cosine; v2.0 and v2.1 are not comparable)")
                }
                ("aesthetic", _) => "LAION aesthetic v2 head".to_string(),
                _ => String::new(),
            };
            println!(
                "{:<10} {:>12.4}  [{:>10.4}, {:>10.4}]  {note}",
                r.scores.metric, r.scores.value, r.ci95.0, r.ci95.1
            );
        }
    }
    Ok(())
}
