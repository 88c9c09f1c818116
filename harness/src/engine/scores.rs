//! The score stage: the CLIP-based quality and preference metrics (aesthetic, CLIP score,
//! PickScore, HPSv2) loaded once and applied to a set of images with bootstrap intervals.
//! `score` and `run` both use it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use image::RgbImage;

use adt_metrics::bootstrap::{mean_replicates, percentile_interval};
use adt_metrics::clip::{Metric, MetricScores, Resample, Scorer, Sources};

use crate::cli::ScoreModelOpts;
use crate::exit::DataError;

/// Parse `--metric a,b,…` (order kept, duplicates dropped).
pub fn parse_metrics(s: &str) -> anyhow::Result<Vec<Metric>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = Metric::parse(name).with_context(|| {
            format!("unknown metric `{name}`; choose from aesthetic, clipscore, pickscore, hpsv2")
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        anyhow::bail!("no metric given (--metric aesthetic,clipscore,pickscore,hpsv2)");
    }
    Ok(out)
}

/// The model sources the flags name.
pub fn sources(o: &ScoreModelOpts) -> Sources {
    Sources {
        clip_model: o.clip_model.clone(),
        pickscore_model: o.pickscore_model.clone(),
        pickscore_processor: o.pickscore_processor.clone(),
        aesthetic_clip: o.aesthetic_clip.clone(),
        aesthetic_head: o.aesthetic_head.clone(),
        hps_model: o.hps_model.clone(),
        hps_config: o.hps_config.clone(),
        hps_tokenizer: o.hps_tokenizer.clone(),
        hps_version: o.hps_version.clone(),
        resample: if o.processor == "pil" {
            Resample::Pil
        } else {
            Resample::Torchvision
        },
        aesthetic_resample: if o.aesthetic_processor == "torchvision" {
            Resample::Torchvision
        } else {
            Resample::Pil
        },
        hps_antialias: !o.hps_no_antialias,
    }
}

/// The image files of a folder (png, jpg, jpeg, webp; not recursive), in name order.
pub fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && adt_datasets::is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Image files scored without holding them: each is read and decoded (bounded:
/// [`adt_datasets::decode_image_bounded`]) when a scorer asks for it, and dropped once it is
/// preprocessed. An undecodable file is a data error naming it.
pub struct ImageFiles<'a>(pub &'a [PathBuf]);

impl adt_metrics::clip::Images for ImageFiles<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn image(&self, i: usize) -> adt_metrics::Result<std::borrow::Cow<'_, RgbImage>> {
        let p = &self.0[i];
        adt_datasets::read_image_file(p)
            .map(std::borrow::Cow::Owned)
            .map_err(|reason| adt_metrics::Error::Image {
                path: p.display().to_string(),
                reason: format!("cannot decode the image ({reason})"),
            })
    }
}

/// Read a prompt file: one prompt per line, one line per image (a final newline is not a
/// line). More or fewer lines than images is a data error.
pub fn read_prompts(path: &Path, n_images: usize, dir: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) && lines.len() > n_images {
        lines.pop();
    }
    if lines.len() != n_images {
        return Err(DataError(format!(
            "{} has {} prompt line(s) but {} has {} image(s): give exactly one prompt per image, \
             in the images' name order",
            path.display(),
            lines.len(),
            dir.display(),
            n_images
        ))
        .into());
    }
    Ok(lines)
}

/// One metric's result on one image set, with its interval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    /// The scores.
    #[serde(flatten)]
    pub scores: MetricScores,
    /// 95 % bootstrap interval of the value (images resampled).
    pub ci95: (f64, f64),
    /// HPSv2 version.
    pub version: Option<String>,
    /// Files read and their SHA-256.
    pub weights: Vec<(String, String)>,
    /// The processor.
    pub processor: String,
}

/// Score one set with loaded scorers.
pub fn score_set<'a>(
    scorers: impl IntoIterator<Item = &'a Scorer>,
    images: &(impl adt_metrics::clip::Images + ?Sized),
    prompts: Option<&[String]>,
    batch: usize,
    reps: usize,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<Vec<Scored>> {
    scorers
        .into_iter()
        .map(|s| {
            let bar = crate::progress::Bar::new(images.count() as u64, s.metric().name(), quiet);
            let mut last = 0;
            let scores = s
                .score_progress(images, prompts, batch, &mut |done| {
                    bar.inc_by((done - last) as u64);
                    last = done;
                })
                .with_context(|| format!("scoring {}", s.metric().name()))?;
            bar.finish();
            let mut reps = mean_replicates(&scores.per_sample, reps.max(1), seed);
            if s.metric() == Metric::ClipScore {
                // torchmetrics clamps the mean at 0; so do its replicates.
                for r in &mut reps {
                    *r = r.max(0.0);
                }
            }
            let ci95 = percentile_interval(&reps, 0.95)?;
            Ok(Scored {
                scores,
                ci95,
                version: s.version().map(String::from),
                weights: s.files().to_vec(),
                processor: s.processor().describe(),
            })
        })
        .collect()
}

/// Load the scorers of `metrics` (each announces itself on stderr unless quiet).
pub fn load_scorers(
    metrics: &[Metric],
    src: &Sources,
    device: &candle_core::Device,
    quiet: bool,
) -> anyhow::Result<Vec<Scorer>> {
    metrics
        .iter()
        .map(|&m| {
            if !quiet {
                eprintln!("loading {} …", m.name());
            }
            Scorer::load(m, src, device)
                .with_context(|| format!("cannot load the {} model", m.name()))
        })
        .collect()
}
