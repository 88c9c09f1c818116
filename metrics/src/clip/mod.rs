//! Quality and preference metrics on CLIP towers: CLIP score (torchmetrics), PickScore,
//! the LAION aesthetic predictor v2 and HPSv2 / v2.1 — each with its anchor's exact
//! preprocessing ([`preprocess`]), tokenizer ([`tokenize`]), checkpoint names ([`load`])
//! and score definition ([`scores`]).

pub mod hub;
pub mod load;
pub mod model;
pub mod preprocess;
pub mod scores;
pub mod tokenize;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;

pub use load::Provenance;
pub use model::{ClipModel, normalize_rows};
pub use preprocess::{Processor, Resample};
pub use scores::AestheticHead;
pub use tokenize::{ClipTokenizer, Tokens};

use crate::{Error, Result};

/// One of the CLIP-based metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// LAION aesthetic predictor v2 (no prompt).
    Aesthetic,
    /// torchmetrics CLIP score.
    ClipScore,
    /// PickScore v1.
    PickScore,
    /// HPSv2 / v2.1.
    Hpsv2,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 4] = [
        Metric::Aesthetic,
        Metric::ClipScore,
        Metric::PickScore,
        Metric::Hpsv2,
    ];

    /// The command-line / report name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Aesthetic => "aesthetic",
            Metric::ClipScore => "clipscore",
            Metric::PickScore => "pickscore",
            Metric::Hpsv2 => "hpsv2",
        }
    }

    /// Parse a name (`clip-score`, `clip_score`, `hps` accepted).
    pub fn parse(s: &str) -> Option<Metric> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "aesthetic" | "aesthetics" | "laionaesthetic" => Some(Metric::Aesthetic),
            "clipscore" | "clip" => Some(Metric::ClipScore),
            "pickscore" | "pick" => Some(Metric::PickScore),
            "hpsv2" | "hps" | "hpsv21" => Some(Metric::Hpsv2),
            _ => None,
        }
    }

    /// Whether the metric scores (image, prompt) pairs.
    pub fn needs_prompts(self) -> bool {
        self != Metric::Aesthetic
    }
}

/// Where a metric's model comes from (paths or repo ids; defaults are the anchors').
#[derive(Debug, Clone)]
pub struct Sources {
    /// CLIP score: a transformers CLIPModel folder or repo id.
    pub clip_model: String,
    /// PickScore: model folder or repo id.
    pub pickscore_model: String,
    /// PickScore's processor/tokenizer repo (used when the model folder lacks a tokenizer).
    pub pickscore_processor: String,
    /// Aesthetic: the CLIP ViT-L/14 folder or repo id.
    pub aesthetic_clip: String,
    /// Aesthetic: the head file (`None`: fetched into the cache).
    pub aesthetic_head: Option<PathBuf>,
    /// HPSv2: an open_clip checkpoint file, or `repo:file` on the hub.
    pub hps_model: String,
    /// HPSv2: the open_clip config JSON (`None`: beside the checkpoint, else embedded).
    pub hps_config: Option<PathBuf>,
    /// HPSv2 tokenizer: open_clip's BPE file or a `tokenizer.json` (`None`: fetched).
    pub hps_tokenizer: Option<PathBuf>,
    /// HPSv2 version label (`None`: read from the checkpoint's file name).
    pub hps_version: Option<String>,
    /// The uint8 resampler of the CLIP processors (CLIP score, PickScore).
    pub resample: Resample,
    /// The aesthetic predictor's resampler (`clip.load` resizes with PIL).
    pub aesthetic_resample: Resample,
    /// HPSv2's resize antialias.
    pub hps_antialias: bool,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            clip_model: "openai/clip-vit-large-patch14".into(),
            pickscore_model: "yuvalkirstain/PickScore_v1".into(),
            pickscore_processor: "laion/CLIP-ViT-H-14-laion2B-s32B-b79K".into(),
            aesthetic_clip: "openai/clip-vit-large-patch14".into(),
            aesthetic_head: None,
            hps_model: format!("{HPS_REPO}:HPS_v2.1_compressed.pt"),
            hps_config: None,
            hps_tokenizer: None,
            hps_version: None,
            resample: Resample::Torchvision,
            aesthetic_resample: Resample::Pil,
            hps_antialias: true,
        }
    }
}

/// HPSv2's Hugging Face repo.
pub const HPS_REPO: &str = "xswu/HPSv2";
/// The aesthetic head's release file, at a fixed commit of its repository.
pub const AESTHETIC_URL: &str = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/6934dd81792f086e613a121dbce43082cb8be85e/sac+logos+ava1-l14-linearMSE.pth";
/// Its size in bytes (the repository's git tree).
pub const AESTHETIC_SIZE: u64 = 3_714_759;
/// Its SHA-256.
pub const AESTHETIC_SHA256: &str =
    "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0";
/// The PyPI package holding open_clip's BPE vocabulary.
pub const OPEN_CLIP_PACKAGE: &str = "open_clip_torch==3.3.0";
/// The vocabulary's path inside the wheel.
pub const OPEN_CLIP_BPE_MEMBER: &str = "open_clip/bpe_simple_vocab_16e6.txt.gz";
/// SHA-256 of `bpe_simple_vocab_16e6.txt.gz`.
pub const OPEN_CLIP_BPE_SHA256: &str =
    "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a";

/// open_clip's BPE vocabulary: `explicit`, else the adt-bench cache, else extracted once
/// from `pip download open_clip_torch` (SHA-256 checked).
pub fn open_clip_bpe(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Clip(format!(
                "{}: no such tokenizer file",
                p.display()
            )))
        };
    }
    let dest = crate::weights::cache_dir()
        .join("clip")
        .join("bpe_simple_vocab_16e6.txt.gz");
    if dest.is_file() {
        // Checked on every use (1.3 MB): a file of another content here is not the fetched one.
        let sha = load::sha256_file(&dest)?;
        if sha != OPEN_CLIP_BPE_SHA256 {
            return Err(Error::Clip(format!(
                "{}: SHA-256 {sha}, expected {OPEN_CLIP_BPE_SHA256} (open_clip's vocabulary); \
                 delete it to fetch it again",
                dest.display()
            )));
        }
        return Ok(dest);
    }
    let supply = format!(
        "supply open_clip's bpe_simple_vocab_16e6.txt.gz (inside `pip download --no-deps {OPEN_CLIP_PACKAGE}`, \
         SHA-256 {OPEN_CLIP_BPE_SHA256}) with --hps-tokenizer, or put it at {}",
        dest.display()
    );
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let attempt = || -> std::result::Result<(), String> {
        let out = tmp.join("bpe.gz");
        crate::weights::pip_member(OPEN_CLIP_PACKAGE, OPEN_CLIP_BPE_MEMBER, &tmp, &out)?;
        let sha = load::sha256_file(&out).map_err(|e| e.to_string())?;
        if sha != OPEN_CLIP_BPE_SHA256 {
            return Err(format!("SHA-256 {sha}, expected {OPEN_CLIP_BPE_SHA256}"));
        }
        std::fs::rename(&out, &dest).map_err(|e| e.to_string())
    };
    let r = attempt();
    let _ = std::fs::remove_dir_all(&tmp);
    r.map(|()| dest).map_err(|e| {
        Error::Clip(format!(
            "open_clip's tokenizer could not be fetched ({e}); {supply}"
        ))
    })
}

/// A metric ready to score: its model, tokenizer, processor and provenance.
pub struct Scorer {
    metric: Metric,
    model: ClipModel,
    tokenizer: Option<ClipTokenizer>,
    processor: Processor,
    head: Option<AestheticHead>,
    files: Vec<(String, String)>,
    version: Option<String>,
}

/// The scores of one metric on one image set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetricScores {
    /// Metric name.
    pub metric: &'static str,
    /// Per image (paired with its prompt where the metric uses prompts).
    pub per_sample: Vec<f64>,
    /// The metric's value over the set: the mean, except CLIP score's `max(mean, 0)`.
    pub value: f64,
    /// PickScore only: the preference probability of each image among the images that share
    /// its prompt (softmax of the logits); `None` elsewhere.
    pub preference: Option<Vec<f64>>,
}

fn hf_tokenizer(dir: &Path, fallback: Option<&str>, context: usize) -> Result<ClipTokenizer> {
    let local = dir.join("tokenizer.json");
    if local.is_file() {
        return ClipTokenizer::from_hf(&local, context);
    }
    match fallback {
        Some(repo) => {
            let p = hub::repo_file(repo, "tokenizer.json", "--pickscore-processor")?
                .ok_or_else(|| Error::Clip(format!("{repo} has no tokenizer.json")))?;
            let _ = hub::repo_file(repo, "tokenizer_config.json", "--pickscore-processor");
            ClipTokenizer::from_hf(&p, context)
        }
        None => Err(Error::Clip(format!(
            "{}: no tokenizer.json (the CLIP model folder needs its tokenizer)",
            dir.display()
        ))),
    }
}

const HF_OPTIONAL: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
];

impl Scorer {
    /// Load a metric's model from `sources` onto `device`.
    pub fn load(metric: Metric, src: &Sources, device: &Device) -> Result<Scorer> {
        let mut files = Vec::new();
        let hashed = |p: &Path| -> Result<(String, String)> {
            Ok((p.display().to_string(), load::sha256_file(p)?))
        };
        let scorer = match metric {
            Metric::ClipScore | Metric::PickScore | Metric::Aesthetic => {
                let (spec, flag) = match metric {
                    Metric::ClipScore => (&src.clip_model, "--clip-model"),
                    Metric::PickScore => (&src.pickscore_model, "--pickscore-model"),
                    _ => (&src.aesthetic_clip, "--aesthetic-clip"),
                };
                let dir = hub::model_folder(spec, &HF_OPTIONAL, flag)?;
                let (model, prov) = load::load_hf(&dir, device)?;
                files.extend(
                    prov.files
                        .iter()
                        .map(|(f, h)| (f.display().to_string(), h.clone())),
                );
                let context = model.config().text.context;
                let (tokenizer, head, resample) = match metric {
                    Metric::Aesthetic => {
                        // The release file was just checked against its pin, so its hash is
                        // the pin; a head the user gives is hashed for the manifest.
                        let (head_path, head_sha) = match &src.aesthetic_head {
                            Some(p) => (p.clone(), None),
                            None => (
                                hub::cached_url(
                                    &crate::weights::cache_dir()
                                        .join("clip")
                                        .join("sac+logos+ava1-l14-linearMSE.pth"),
                                    AESTHETIC_URL,
                                    AESTHETIC_SIZE,
                                    AESTHETIC_SHA256,
                                    "--aesthetic-head",
                                )?,
                                Some(AESTHETIC_SHA256.to_string()),
                            ),
                        };
                        let head = AestheticHead::load(&head_path, device)?;
                        if model.config().projection_dim != 768 {
                            return Err(Error::Clip(format!(
                                "{spec}: projection width {}; the aesthetic head needs CLIP ViT-L/14's 768",
                                model.config().projection_dim
                            )));
                        }
                        files.push(match head_sha {
                            Some(sha) => (head_path.display().to_string(), sha),
                            None => hashed(&head_path)?,
                        });
                        (None, Some(head), src.aesthetic_resample)
                    }
                    Metric::PickScore => (
                        Some(hf_tokenizer(&dir, Some(&src.pickscore_processor), context)?),
                        None,
                        src.resample,
                    ),
                    _ => (Some(hf_tokenizer(&dir, None, context)?), None, src.resample),
                };
                let processor = match (metric, resample) {
                    // The aesthetic predictor's reference preprocessing is clip.load's.
                    (Metric::Aesthetic, Resample::Pil) => Processor::clip_load(),
                    _ => Processor::openai(resample),
                };
                Scorer {
                    metric,
                    processor,
                    model,
                    tokenizer,
                    head,
                    files,
                    version: None,
                }
            }
            Metric::Hpsv2 => {
                let file = match src.hps_model.split_once(':') {
                    Some((repo, f))
                        if hub::is_repo_id(repo) && !Path::new(&src.hps_model).exists() =>
                    {
                        hub::repo_file(repo, f, "--hps-model")?
                            .ok_or_else(|| Error::Clip(format!("{repo} has no `{f}`")))?
                    }
                    _ => PathBuf::from(&src.hps_model),
                };
                if !file.is_file() {
                    return Err(Error::Clip(format!(
                        "{}: no such HPSv2 checkpoint (HPS_v2_compressed.pt or HPS_v2.1_compressed.pt from {HPS_REPO})",
                        file.display()
                    )));
                }
                let (model, prov) = load::load_open_clip(&file, src.hps_config.as_deref(), device)?;
                files.extend(
                    prov.files
                        .iter()
                        .map(|(f, h)| (f.display().to_string(), h.clone())),
                );
                let context = model.config().text.context;
                let tokenizer = match &src.hps_tokenizer {
                    Some(p) if p.extension().is_some_and(|e| e == "json") => {
                        ClipTokenizer::from_hf(p, context)?
                    }
                    other => {
                        let p = open_clip_bpe(other.as_deref())?;
                        files.push(hashed(&p)?);
                        ClipTokenizer::from_open_clip_bpe(&p, context)?
                    }
                };
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let version = src.hps_version.clone().or_else(|| {
                    if name.contains("v2.1") {
                        Some("v2.1".into())
                    } else if name.contains("v2") {
                        Some("v2.0".into())
                    } else {
                        None
                    }
                });
                Scorer {
                    metric,
                    processor: Processor::hps(src.hps_antialias),
                    model,
                    tokenizer: Some(tokenizer),
                    head: None,
                    files,
                    version: Some(version.unwrap_or_else(|| "unknown".into())),
                }
            }
        };
        if scorer.processor.side() != scorer.model.config().vision.image_size {
            return Err(Error::Clip(format!(
                "the model's image tower takes {}×{} but the processor makes {}×{}",
                scorer.model.config().vision.image_size,
                scorer.model.config().vision.image_size,
                scorer.processor.side(),
                scorer.processor.side()
            )));
        }
        Ok(scorer)
    }

    /// Assemble a scorer from parts (tests, custom models).
    pub fn from_parts(
        metric: Metric,
        model: ClipModel,
        tokenizer: Option<ClipTokenizer>,
        processor: Processor,
        head: Option<AestheticHead>,
    ) -> Scorer {
        Scorer {
            metric,
            model,
            tokenizer,
            processor,
            head,
            files: Vec::new(),
            version: None,
        }
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The files read and their SHA-256 (for the manifest).
    pub fn files(&self) -> &[(String, String)] {
        &self.files
    }

    /// The HPSv2 version (`v2.0` / `v2.1`; the two are not comparable).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The processor.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The model.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Normalised image embeddings `[N, P]`, computed `batch` images at a time.
    pub fn image_embeds(&self, images: &[RgbImage], batch: usize) -> Result<Tensor> {
        self.image_embeds_progress(images, batch, &mut |_| {})
    }

    /// [`Scorer::image_embeds`], calling `progress(images done)` after each batch. Each image
    /// is fetched from `images` and preprocessed on its own, so at most one decoded image per
    /// thread is alive at a time whatever the images' size (a folder of 12 000² photos streams).
    pub fn image_embeds_progress(
        &self,
        images: &(impl Images + ?Sized),
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor> {
        use rayon::prelude::*;
        let mut rows = Vec::new();
        let n = images.count();
        let batch = batch.max(1);
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let px: Vec<Vec<f32>> = (start..end)
                .into_par_iter()
                .map(|i| images.image(i).map(|img| self.processor.apply(&img)))
                .collect::<Result<_>>()?;
            let px: Vec<f32> = px.concat();
            let out = self.model.encode_images(&px, end - start)?;
            rows.push(normalize_rows(&out.embeds)?);
            progress(end);
            start = end;
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Normalised text embeddings `[N, P]`.
    pub fn text_embeds(&self, prompts: &[String]) -> Result<Tensor> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| Error::Clip(format!("{} has no text side", self.metric.name())))?;
        let mut rows = Vec::new();
        for chunk in prompts.chunks(64) {
            let ids = tok.encode(chunk)?;
            rows.push(normalize_rows(&self.model.encode_text(&ids)?.embeds)?);
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Score images (with their prompts, one per image, where the metric needs them).
    pub fn score(
        &self,
        images: &[RgbImage],
        prompts: Option<&[String]>,
        batch: usize,
    ) -> Result<MetricScores> {
        self.score_progress(images, prompts, batch, &mut |_| {})
    }

    /// [`Scorer::score`], calling `progress(images done)` after each image batch.
    pub fn score_progress(
        &self,
        images: &(impl Images + ?Sized),
        prompts: Option<&[String]>,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<MetricScores> {
        if images.count() == 0 {
            return Err(Error::TooFew {
                what: self.metric.name().into(),
                n: 0,
                min: 1,
            });
        }
        let prompts = match (self.metric.needs_prompts(), prompts) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::Clip(format!(
                    "{} scores (image, prompt) pairs: give one prompt per image",
                    self.metric.name()
                )));
            }
            (true, Some(p)) if p.len() != images.count() => {
                return Err(Error::Clip(format!(
                    "{} prompts for {} images: give exactly one prompt per image",
                    p.len(),
                    images.count()
                )));
            }
            (true, Some(p)) => Some(p),
        };
        let img = self.image_embeds_progress(images, batch, progress)?;
        let (per_sample, value, preference) = match self.metric {
            Metric::Aesthetic => {
                let head = self
                    .head
                    .as_ref()
                    .ok_or_else(|| Error::Clip("aesthetic scorer without its head".into()))?;
                let s = head.forward(&img)?;
                let m = mean(&s);
                (s, m, None)
            }
            Metric::ClipScore | Metric::PickScore | Metric::Hpsv2 => {
                let p = prompts.unwrap_or_default();
                // Embed each distinct prompt once.
                let mut uniq: Vec<String> = p.to_vec();
                uniq.sort();
                uniq.dedup();
                let txt = self.text_embeds(&uniq)?;
                let cos = scores::cosines(&img, &txt)?;
                let col = |i: usize| uniq.binary_search(&p[i]).unwrap_or(0);
                let c: Vec<f64> = (0..images.count()).map(|i| cos[i][col(i)] as f64).collect();
                match self.metric {
                    Metric::ClipScore => {
                        let s: Vec<f64> = c.iter().map(|v| 100.0 * v).collect();
                        let v = scores::clip_score_metric(&s);
                        (s, v, None)
                    }
                    Metric::PickScore => {
                        let scale = self.model.logit_scale().exp() as f64;
                        let s: Vec<f64> = c.iter().map(|v| scale * v).collect();
                        let mut pref = vec![0.0; s.len()];
                        for u in 0..uniq.len() {
                            let idx: Vec<usize> = (0..s.len()).filter(|&i| col(i) == u).collect();
                            let row: Vec<f32> = idx.iter().map(|&i| s[i] as f32).collect();
                            for (k, pr) in idx.iter().zip(scores::softmax(&row)) {
                                pref[*k] = pr as f64;
                            }
                        }
                        let m = mean(&s);
                        (s, m, Some(pref))
                    }
                    _ => {
                        let m = mean(&c);
                        (c, m, None)
                    }
                }
            }
        };
        Ok(MetricScores {
            metric: self.metric.name(),
            per_sample,
            value,
            preference,
        })
    }
}

/// Images to score, fetched one at a time (decoded on demand, or already in memory).
pub trait Images: Sync {
    /// How many.
    fn count(&self) -> usize;
    /// Image `i` (`i < count()`); an image that cannot be read is [`Error::Image`].
    fn image(&self, i: usize) -> Result<std::borrow::Cow<'_, RgbImage>>;
}

impl Images for [RgbImage] {
    fn count(&self) -> usize {
        self.len()
    }
    fn image(&self, i: usize) -> Result<std::borrow::Cow<'_, RgbImage>> {
        Ok(std::borrow::Cow::Borrowed(&self[i]))
    }
}

impl Images for Vec<RgbImage> {
    fn count(&self) -> usize {
        self.len()
    }
    fn image(&self, i: usize) -> Result<std::borrow::Cow<'_, RgbImage>> {
        Ok(std::borrow::Cow::Borrowed(&self[i]))
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
