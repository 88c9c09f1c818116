//! Typed settings: what a model instance is loaded with ([`ModelSpec`]), how a tune runs
//! ([`TuneSettings`]), and the closed sets among them (method, device), each parsed once.
//! `tune`, `sample` and `run` all build these and hand them to the stages in
//! [`crate::engine::cells`]; a cell's cache key is the hash of their serialized form.

use std::fmt;
use std::str::FromStr;

use adt_tuner::adt::{DiscInput, DiscSchedule, StartDist};
use adt_tuner::disc::DiscLoss;
use adt_tuner::paths::GradPath;
use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A benchmark method: the untouched model, the fine-tuning baseline, or ADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The model as loaded.
    Base,
    /// Plain fine-tuning with the diffusion loss.
    Ft,
    /// Adversarial Diffusion Tuning.
    Adt,
    /// Plain fine-tuning at ADT's compute: a model update every iteration from the first
    /// (H 1, no discriminator warm-up), so it sees as many training images as ADT's
    /// discriminator and rollouts do.
    FtEqual,
}

impl Method {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Base => "base",
            Method::Ft => "ft",
            Method::Adt => "adt",
            Method::FtEqual => "ft-equal",
        }
    }

    /// The tune settings of this method's cells in a run: `ft-equal` updates the model every
    /// iteration from the first.
    pub fn settings(self, s: &TuneSettings) -> TuneSettings {
        match self {
            Method::FtEqual => TuneSettings {
                h: 1,
                accum: 1,
                d_warmup: 0,
                ..s.clone()
            },
            _ => s.clone(),
        }
    }

    /// The tuner's method (`None` for `base`).
    pub fn tuned(self) -> Option<adt_tuner::adt::Method> {
        match self {
            Method::Base => None,
            Method::Ft => Some(adt_tuner::adt::Method::Ft),
            Method::Adt => Some(adt_tuner::adt::Method::Adt),
            Method::FtEqual => Some(adt_tuner::adt::Method::Ft),
        }
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "base" => Ok(Method::Base),
            "ft" => Ok(Method::Ft),
            "adt" => Ok(Method::Adt),
            "ft-equal" => Ok(Method::FtEqual),
            other => bail!("unknown method `{other}` (base, ft, adt, ft-equal)"),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a model computes: `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => Ok(DeviceSpec::Cuda(n.parse().with_context(|| {
                    format!("unknown device `{s}` (cpu, cuda or cuda:N)")
                })?)),
                None => bail!("unknown device `{s}` (cpu, cuda or cuda:N)"),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Strings for values written `name:steps`, `LO..HI`, … in files and on the command line.
macro_rules! serde_as_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse()
                    .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
            }
        }
    };
}

serde_as_str!(crate::sampling::SamplerSpec);

/// The start-index distribution of the rollouts, written `uniform`, `N` or `LO..HI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start(pub StartDist);

impl FromStr for Start {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let bad = || format!("the start is `uniform`, an index or a range `LO..HI`, not `{s}`");
        if s == "uniform" {
            return Ok(Start(StartDist::Uniform));
        }
        if let Some((lo, hi)) = s.split_once("..") {
            let lo: usize = lo.trim().parse().with_context(bad)?;
            let hi: usize = hi
                .trim()
                .trim_start_matches('=')
                .parse()
                .with_context(bad)?;
            if lo > hi {
                bail!("{}", bad());
            }
            return Ok(Start(StartDist::Range(lo, hi)));
        }
        Ok(Start(StartDist::Fixed(s.parse().with_context(bad)?)))
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StartDist::Uniform => f.write_str("uniform"),
            StartDist::Fixed(i) => write!(f, "{i}"),
            StartDist::Range(lo, hi) => write!(f, "{lo}..{hi}"),
        }
    }
}

serde_as_str!(Start);

/// How a model instance is created: the plugin and the options its `create` receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model plugin.
    pub plugin: String,
    /// Weights (a path, a Hugging Face repo id, `random`; default: the plugin's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Where it computes.
    pub device: DeviceSpec,
    /// Seed of a random initialisation (`weights = "random"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub init_seed: u64,
    /// Compute dtype (`f32`, `f16`, `bf16`), where the plugin offers a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Train rank-r LoRA adapters instead of every weight, where the plugin offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    /// Weight-file variant (e.g. `fp16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Image height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<usize>,
    /// Image width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ModelSpec {
    /// A spec of `plugin` with its defaults on `device`.
    pub fn new(plugin: &str, device: DeviceSpec) -> Self {
        ModelSpec {
            plugin: plugin.into(),
            weights: None,
            device,
            init_seed: 0,
            dtype: None,
            lora_rank: None,
            variant: None,
            height: None,
            width: None,
        }
    }

    /// The JSON `create` receives: only the options that are set (a plugin refuses options it
    /// does not know, by name).
    pub fn plugin_config(&self) -> serde_json::Value {
        let mut cfg = serde_json::json!({ "device": self.device.to_string() });
        if let Some(w) = &self.weights {
            cfg["weights"] = w.clone().into();
            if w == "random" {
                cfg["seed"] = self.init_seed.into();
            }
        }
        if let Some(v) = &self.dtype {
            cfg["dtype"] = v.clone().into();
        }
        if let Some(v) = self.lora_rank {
            cfg["lora_rank"] = v.into();
        }
        if let Some(v) = &self.variant {
            cfg["variant"] = v.clone().into();
        }
        if let Some(v) = self.height {
            cfg["height"] = v.into();
        }
        if let Some(v) = self.width {
            cfg["width"] = v.into();
        }
        cfg
    }

    /// Create the model instance.
    pub fn open(
        &self,
        registry: &adt_plugin_host::Registry,
    ) -> anyhow::Result<adt_plugin_host::Model> {
        let info = registry.find(adt_plugin_host::Kind::Model, &self.plugin)?;
        adt_plugin_host::Model::create(info, &self.plugin_config())
            .with_context(|| format!("failed to load model `{}`", self.plugin))
    }

    /// The same model with other weights (a tuned checkpoint); the options a checkpoint keeps
    /// itself (LoRA rank, image size) are dropped.
    pub fn with_weights(&self, weights: &std::path::Path) -> ModelSpec {
        ModelSpec {
            weights: Some(weights.display().to_string()),
            lora_rank: None,
            height: None,
            width: None,
            variant: None,
            ..self.clone()
        }
    }

    /// The command-line options that recreate this spec (`tune` / `sample`).
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            "--model".into(),
            self.plugin.clone(),
            "--device".into(),
            self.device.to_string(),
        ];
        let mut opt = |flag: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push(flag.into());
                v.push(val);
            }
        };
        opt("--weights", self.weights.clone());
        opt("--dtype", self.dtype.clone());
        opt("--lora-rank", self.lora_rank.map(|r| r.to_string()));
        opt("--variant", self.variant.clone());
        opt("--height", self.height.map(|r| r.to_string()));
        opt("--width", self.width.map(|r| r.to_string()));
        if self.init_seed != 0 {
            v.push("--init-seed".into());
            v.push(self.init_seed.to_string());
        }
        v
    }
}

/// Everything a tune does besides the model, the method, the sampler and the seed: the typed
/// form of `tune`'s options and of `run`'s `[tune]` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSettings {
    /// Training data (a data source: `builtin:shapes`, an image folder, parquet, webdataset).
    pub data: String,
    /// Iterations (discriminator updates; the model every `h` of them).
    pub iters: u64,
    /// Examples per iteration.
    pub batch: usize,
    /// Gradient path.
    pub path: GradPath,
    /// Trained evaluations per rollout.
    pub k: usize,
    /// Trained evaluations drawn at random.
    pub k_random: bool,
    /// Start-index distribution.
    pub start: Start,
    /// Guidance scale of the rollouts (none: the model's; `run` fills in its evaluation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f32>,
    /// Fraction of the diffusion term's captions dropped to the empty prompt.
    pub caption_dropout: f64,
    /// No gradient through the unconditional branch.
    pub detach_uncond: bool,
    /// λ of the diffusion loss.
    pub lambda: f64,
    /// A model update every H iterations.
    pub h: u64,
    /// Model learning rate (peak).
    pub lr: f64,
    /// The fine-tuning baseline's learning rate (none: `lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_lr: Option<f64>,
    /// Discriminator learning rate.
    pub d_lr: f64,
    /// Decay of the moving average of the tuned weights that is evaluated (none: the last
    /// weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
    /// The discriminator's learning-rate schedule.
    pub d_schedule: DiscSchedule,
    /// Discriminator updates per iteration.
    pub d_steps: u64,
    /// What the discriminator sees of a generated image.
    pub d_input: DiscInput,
    /// Warm-up iterations.
    pub warmup: u64,
    /// Discriminator-only iterations first.
    pub d_warmup: u64,
    /// Gradient clipping (global norm).
    pub clip: f64,
    /// Iterations accumulated into one model update.
    pub accum: u64,
    /// Discriminator objective.
    pub disc_loss: DiscLoss,
    /// Siamese temperature.
    pub temperature: f64,
    /// EMA rate of the twin heads.
    pub tau: f64,
    /// Colour augmentation strength.
    pub aug_color: f64,
    /// The discriminator's frozen backbone (`shapes`, `dinov2:SOURCE`; default per model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<String>,
    /// Stop after this many non-finite updates in a row.
    pub max_non_finite: u32,
    /// Checkpoint every this many iterations.
    pub checkpoint_every: u64,
}

impl TuneSettings {
    /// `tune`'s defaults (its `--help`).
    pub fn tune_defaults() -> TuneSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: crate::cli::TuneArgs,
        }
        match Cli::try_parse_from(["tune"]) {
            Ok(c) => TuneSettings::from_args(&c.a)
                .unwrap_or_else(|e| unreachable!("tune's own defaults are valid: {e:#}")),
            Err(e) => unreachable!("tune parses without arguments: {e}"),
        }
    }

    /// From `tune`'s parsed options (every closed set parsed here, once).
    pub fn from_args(a: &crate::cli::TuneArgs) -> anyhow::Result<TuneSettings> {
        let s = TuneSettings {
            data: a.data.clone(),
            iters: a.iters,
            batch: a.batch,
            path: GradPath::parse(&a.path).with_context(|| {
                format!("unknown gradient path `{}` (adt, drtune, full)", a.path)
            })?,
            k: a.k,
            k_random: a.k_random,
            start: a.start.parse()?,
            guidance: a.guidance,
            caption_dropout: a.caption_dropout,
            detach_uncond: a.detach_uncond,
            lambda: a.lambda,
            h: a.h,
            lr: a.lr,
            ft_lr: a.ft_lr,
            d_lr: a.d_lr,
            ema: a.ema,
            d_schedule: closed(&a.d_schedule, "discriminator schedule", "constant, cosine")?,
            d_steps: a.d_steps,
            d_input: closed(&a.d_input, "discriminator input", "quantized, clamped, raw")?,
            warmup: a.warmup,
            d_warmup: a.d_warmup,
            clip: a.clip,
            accum: a.accum,
            disc_loss: DiscLoss::parse(&a.disc_loss).with_context(|| {
                format!(
                    "unknown discriminator loss `{}` (siamese, hinge, non-saturating)",
                    a.disc_loss
                )
            })?,
            temperature: a.temperature,
            tau: a.tau,
            aug_color: a.aug_color,
            backbone: a.backbone.clone(),
            max_non_finite: a.max_non_finite,
            checkpoint_every: a.checkpoint_every,
        };
        s.check()?;
        Ok(s)
    }

    /// Refuse settings the tuner cannot run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.h == 0 || self.accum == 0 || self.accum > self.h {
            bail!(
                "h must be ≥ 1 and 1 ≤ accum ≤ h (got h {}, accum {})",
                self.h,
                self.accum
            );
        }
        if self.batch == 0 || self.iters == 0 {
            bail!("iters and batch must be at least 1");
        }
        if self.d_steps == 0 {
            bail!("d-steps must be at least 1");
        }
        if let Some(d) = self.ema
            && !(0.0..1.0).contains(&d)
        {
            bail!("ema must be in [0, 1) (got {d})");
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            bail!(
                "caption-dropout must be in [0, 1] (got {})",
                self.caption_dropout
            );
        }
        if let Some(g) = self.guidance
            && !g.is_finite()
        {
            bail!("guidance must be a finite number (got {g})");
        }
        Ok(())
    }

    /// These settings with the keys of `table` replaced (a `[tune]` table; unknown keys and
    /// wrong types are refused by name).
    pub fn overlay(
        &self,
        table: &serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<TuneSettings> {
        let mut v = serde_json::to_value(self)?;
        if let serde_json::Value::Object(m) = &mut v {
            for (k, x) in table {
                m.insert(k.clone(), x.clone());
            }
        }
        let s: TuneSettings = serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.check()?;
        Ok(s)
    }

    /// The command-line options that give these settings to `tune`.
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut kv = |k: &str, val: String| {
            v.push(format!("--{k}"));
            v.push(val);
        };
        kv("data", self.data.clone());
        kv("iters", self.iters.to_string());
        kv("batch", self.batch.to_string());
        kv("path", to_name(&self.path));
        kv("k", self.k.to_string());
        kv("start", self.start.to_string());
        if let Some(g) = self.guidance {
            kv("guidance", g.to_string());
        }
        kv("caption-dropout", self.caption_dropout.to_string());
        kv("lambda", self.lambda.to_string());
        kv("h", self.h.to_string());
        kv("lr", self.lr.to_string());
        if let Some(l) = self.ft_lr {
            kv("ft-lr", l.to_string());
        }
        kv("d-lr", self.d_lr.to_string());
        if let Some(d) = self.ema {
            kv("ema", d.to_string());
        }
        kv("d-schedule", to_name(&self.d_schedule));
        kv("d-steps", self.d_steps.to_string());
        kv("d-input", to_name(&self.d_input));
        kv("warmup", self.warmup.to_string());
        kv("d-warmup", self.d_warmup.to_string());
        kv("clip", self.clip.to_string());
        kv("accum", self.accum.to_string());
        kv("disc-loss", to_name(&self.disc_loss));
        kv("temperature", self.temperature.to_string());
        kv("tau", self.tau.to_string());
        kv("aug-color", self.aug_color.to_string());
        if let Some(b) = &self.backbone {
            kv("backbone", b.clone());
        }
        kv("max-non-finite", self.max_non_finite.to_string());
        kv("checkpoint-every", self.checkpoint_every.to_string());
        if self.k_random {
            v.push("--k-random".into());
        }
        if self.detach_uncond {
            v.push("--detach-uncond".into());
        }
        v
    }
}

/// A closed set's value by its serialized name, or an error listing the names.
fn closed<T: serde::de::DeserializeOwned>(v: &str, what: &str, names: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| anyhow::anyhow!("unknown {what} `{v}` ({names})"))
}

/// The serialized name of a unit enum variant.
pub fn to_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// SHA-256 (hex, first 16 digits) of a value's canonical JSON: the cache key of a cell.
pub fn settings_key<T: Serialize>(v: &T) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(v)?;
    let h = Sha256::digest(text.as_bytes());
    Ok(h[..8].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_parse_once_and_print_back() {
        for m in ["base", "ft", "adt"] {
            assert_eq!(m.parse::<Method>().unwrap().to_string(), m);
        }
        assert!(
            "sft"
                .parse::<Method>()
                .unwrap_err()
                .to_string()
                .contains("base, ft, adt")
        );
        for d in ["cpu", "cuda:1"] {
            assert_eq!(d.parse::<DeviceSpec>().unwrap().to_string(), d);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        for s in ["uniform", "3", "0..2"] {
            assert_eq!(s.parse::<Start>().unwrap().to_string(), s);
        }
        assert_eq!("1..=4".parse::<Start>().unwrap().0, StartDist::Range(1, 4));
        for bad in ["4..1", "x", "1..", "..3"] {
            assert!(bad.parse::<Start>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tune_settings_round_trip_through_toml_and_the_command_line() {
        let d = TuneSettings::tune_defaults();
        assert_eq!(d.iters, 200);
        assert_eq!(d.path, GradPath::Adt);
        // TOML round trip.
        let text = toml::to_string(&d).unwrap();
        let back: TuneSettings = toml::from_str(&text).unwrap();
        assert_eq!(back, d);
        // A partial table overrides by key; unknown keys and bad values are refused by name.
        let mut t = serde_json::Map::new();
        t.insert("lambda".into(), 2.0.into());
        t.insert("start".into(), "0..1".into());
        t.insert("disc_loss".into(), "hinge".into());
        let o = d.overlay(&t).unwrap();
        assert_eq!(
            (o.lambda, o.start.0, o.disc_loss),
            (2.0, StartDist::Range(0, 1), DiscLoss::Hinge)
        );
        t.insert("lamda".into(), 1.0.into());
        assert!(d.overlay(&t).unwrap_err().to_string().contains("lamda"));
        let mut bad = serde_json::Map::new();
        bad.insert("path".into(), "sideways".into());
        assert!(d.overlay(&bad).is_err());
        // The equivalent command line parses back to the same settings.
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: crate::cli::TuneArgs,
        }
        let argv = std::iter::once("tune".to_string()).chain(o.argv());
        let parsed = TuneSettings::from_args(&Cli::try_parse_from(argv).unwrap().a).unwrap();
        assert_eq!(parsed, TuneSettings { lambda: 2.0, ..o });
    }

    #[test]
    fn the_loop_options_parse_print_back_and_refuse_bad_values() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: crate::cli::TuneArgs,
        }
        let parse = |extra: &[&str]| {
            let argv = std::iter::once("tune").chain(extra.iter().copied());
            TuneSettings::from_args(&Cli::try_parse_from(argv).unwrap().a)
        };
        let d = parse(&[]).unwrap();
        // Defaults: the model's guidance, pretraining's caption dropout, a discriminator at
        // full strength after its warm-up, shown images as the evaluation sees them.
        assert_eq!(
            (
                d.guidance,
                d.caption_dropout,
                d.d_schedule,
                d.d_steps,
                d.d_input
            ),
            (None, 0.1, DiscSchedule::Constant, 1, DiscInput::Quantized)
        );
        let s = parse(&[
            "--guidance",
            "3",
            "--caption-dropout",
            "0",
            "--d-schedule",
            "cosine",
            "--d-steps",
            "3",
            "--d-input",
            "raw",
            "--ema",
            "0.99",
        ])
        .unwrap();
        assert_eq!((d.ema, s.ema), (None, Some(0.99)));
        assert_eq!(
            (
                s.guidance,
                s.caption_dropout,
                s.d_schedule,
                s.d_steps,
                s.d_input
            ),
            (Some(3.0), 0.0, DiscSchedule::Cosine, 3, DiscInput::Raw)
        );
        let argv: Vec<String> = std::iter::once("tune".to_string())
            .chain(s.argv())
            .collect();
        let back = TuneSettings::from_args(&Cli::try_parse_from(argv).unwrap().a).unwrap();
        assert_eq!(back, s);
        for (bad, says) in [
            (&["--d-schedule", "weekly"][..], "constant, cosine"),
            (&["--d-input", "blurred"][..], "quantized, clamped, raw"),
            (&["--d-steps", "0"][..], "d-steps"),
            (&["--ema", "1"][..], "ema must be in [0, 1)"),
            (&["--caption-dropout", "1.5"][..], "caption-dropout"),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_key_changes_with_any_setting() {
        let d = TuneSettings::tune_defaults();
        let k = settings_key(&d).unwrap();
        assert_eq!(k, settings_key(&d.clone()).unwrap());
        let e = TuneSettings {
            lr: d.lr * 2.0,
            ..d.clone()
        };
        assert_ne!(k, settings_key(&e).unwrap());
    }
}
