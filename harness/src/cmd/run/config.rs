//! `run --config bench.toml`: the options as a TOML file, command-line flags overriding it, and
//! the fully resolved configuration written next to the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::RunArgs;
use crate::engine::plan::{ModelTable, RunPlan};

/// `models`: a list of names, or a table of per-model settings (`[models.sd3]`).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum ModelsField {
    /// `models = ["sd15", "sdxl"]`.
    List(Vec<String>),
    /// `[models.sd15] weights = "…"` — the models are the table's keys.
    Table(toml::Table),
}

/// The options of `run` a TOML file may set (keys as the long flags, `_` for `-`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    models: Option<ModelsField>,
    /// Tune settings of every model (keys as `tune`'s flags, `_` for `-`).
    tune: Option<toml::Table>,
    train_data: Option<String>,
    prompts: Option<PathBuf>,
    prompt_column: Option<String>,
    eval_data: Option<String>,
    floor_data: Option<String>,
    eval_subset: Option<String>,
    fid_ref: Option<PathBuf>,
    fid_mode: Option<String>,
    methods: Option<Vec<String>>,
    train_samplers: Option<Vec<String>>,
    eval_samplers: Option<Vec<String>>,
    reference_sampler: Option<String>,
    seeds: Option<Vec<u64>>,
    num: Option<usize>,
    batch: Option<usize>,
    guidance: Option<f32>,
    tune_args: Option<String>,
    device: Option<String>,
    weights: Option<Vec<String>>,
    backbone: Option<Vec<String>>,
    bootstrap: Option<usize>,
    scores: Option<Vec<String>>,
    score_models: Option<ScoreModelsFile>,
    inception_weights: Option<PathBuf>,
    out: Option<PathBuf>,
}

/// The `[score_models]` table: where `--scores`' models come from (keys as the flags).
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreModelsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    clip_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pickscore_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pickscore_processor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aesthetic_clip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aesthetic_head: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hps_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hps_config: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hps_tokenizer: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hps_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aesthetic_processor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hps_no_antialias: Option<bool>,
}

impl ScoreModelsFile {
    fn of(o: &crate::cli::ScoreModelOpts) -> Self {
        ScoreModelsFile {
            clip_model: Some(o.clip_model.clone()),
            pickscore_model: Some(o.pickscore_model.clone()),
            pickscore_processor: Some(o.pickscore_processor.clone()),
            aesthetic_clip: Some(o.aesthetic_clip.clone()),
            aesthetic_head: o.aesthetic_head.clone(),
            hps_model: Some(o.hps_model.clone()),
            hps_config: o.hps_config.clone(),
            hps_tokenizer: o.hps_tokenizer.clone(),
            hps_version: o.hps_version.clone(),
            processor: Some(o.processor.clone()),
            aesthetic_processor: Some(o.aesthetic_processor.clone()),
            hps_no_antialias: Some(o.hps_no_antialias),
        }
    }
}

/// What a `--config` file says beyond the flags: tables.
#[derive(Debug, Default, Clone)]
pub struct FileExtras {
    /// `[tune]`.
    pub tune: Option<serde_json::Map<String, serde_json::Value>>,
    /// `[models.NAME]` tables, as written (checked once the command line's per-model
    /// settings are merged in: [`model_tables`]).
    pub tables: BTreeMap<String, toml::Table>,
    /// Options the file gave (ids as the flags').
    pub given: Vec<String>,
}

/// The configuration a run used, every value resolved (saved as `config.toml`; `run --config`
/// reads it back).
#[derive(Debug, serde::Serialize)]
pub struct Resolved {
    pub methods: Vec<String>,
    pub train_samplers: Vec<String>,
    pub eval_samplers: Vec<String>,
    pub reference_sampler: String,
    pub seeds: Vec<u64>,
    pub num: usize,
    pub batch: usize,
    pub device: String,
    pub bootstrap: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    pub eval_subset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_ref: Option<PathBuf>,
    pub fid_mode: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<String>,
    pub out: PathBuf,
    /// Only with `scores`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_models: Option<ScoreModelsFile>,
    /// Every model's resolved settings.
    pub models: BTreeMap<String, ModelTable>,
}

/// `a` with the values of its `--config` file filled in wherever the command line did not
/// give the option, and the file's tables.
pub fn apply(a: &RunArgs) -> anyhow::Result<(RunArgs, FileExtras)> {
    let mut r = a.clone();
    let mut extras = FileExtras::default();
    let Some(path) = &a.config else {
        return Ok((r, extras));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut f: FileConfig =
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))?;
    let given = |id: &str| a.explicit.iter().any(|e| e == id);
    for (id, set) in [
        ("train_samplers", f.train_samplers.is_some()),
        ("eval_samplers", f.eval_samplers.is_some()),
        ("reference_sampler", f.reference_sampler.is_some()),
    ] {
        if set {
            extras.given.push(id.into());
        }
    }
    let models = match f.models.take() {
        None => None,
        Some(ModelsField::List(v)) => Some(v),
        Some(ModelsField::Table(t)) => {
            let mut names = Vec::new();
            for (name, v) in t {
                let toml::Value::Table(table) = v else {
                    anyhow::bail!("[models.{name}] in {} must be a table", path.display());
                };
                names.push(name.clone());
                extras.tables.insert(name, table);
            }
            Some(names)
        }
    };
    if let Some(m) = models
        && !given("models")
    {
        r.models = m;
    }
    if let Some(t) = f.tune.take() {
        extras.tune = Some(
            serde_json::to_value(&t)?
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
    }
    // `fill!(src => dst; a, b; opt c, d)`: a value the file gives replaces the default of an
    // option the command line did not give; `opt` fields are `Option`s on both sides.
    macro_rules! fill {
        ($src:ident => $dst:expr; $($field:ident),* $(; opt $($o:ident),*)?) => {
            $(
                if let Some(v) = $src.$field {
                    if !given(stringify!($field)) {
                        $dst.$field = v;
                    }
                }
            )*
            $($(
                if $src.$o.is_some() && !given(stringify!($o)) {
                    $dst.$o = $src.$o;
                }
            )*)?
        };
    }
    fill!(
        f => r;
        methods, train_samplers, eval_samplers, reference_sampler, seeds, num, batch, device,
        weights, backbone, scores, out, eval_subset, fid_mode;
        opt guidance, bootstrap, tune_args, train_data, prompts, prompt_column, eval_data,
        floor_data, fid_ref
    );
    if let Some(m) = f.score_models {
        fill!(
            m => r.score_models;
            clip_model, pickscore_model, pickscore_processor, aesthetic_clip, hps_model,
            processor, aesthetic_processor, hps_no_antialias;
            opt aesthetic_head, hps_config, hps_tokenizer, hps_version
        );
    }
    if f.inception_weights.is_some() && !given("inception_weights") {
        r.inception.inception_weights = f.inception_weights;
    }
    Ok((r, extras))
}

/// The settings a `--tune-args` string gives: only the options it names (over the run's own),
/// as `[tune]` keys. Options that are not tune settings (model, method, sampler, seed,
/// output) are refused: they are the run's, per cell.
pub fn tune_args_overlay(s: &str) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    use clap::{CommandFactory, FromArgMatches, Parser};
    #[derive(Parser)]
    #[command(name = "--tune-args", no_binary_name = true)]
    struct TuneCli {
        #[command(flatten)]
        a: crate::cli::TuneArgs,
    }
    let m = TuneCli::command()
        .try_get_matches_from(s.split_whitespace())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cli = TuneCli::from_arg_matches(&m).map_err(|e| anyhow::anyhow!("{e}"))?;
    let full = serde_json::to_value(crate::engine::settings::TuneSettings::from_args(&cli.a)?)?;
    let mut out = serde_json::Map::new();
    for id in m.ids() {
        let id = id.as_str();
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        match full.get(id) {
            Some(v) => {
                out.insert(id.to_string(), v.clone());
            }
            None => anyhow::bail!(
                "--tune-args cannot set `{id}`: the run sets it per cell (models, methods, \
                 samplers, seeds and weights are the run's own options)"
            ),
        }
    }
    Ok(out)
}

/// The bootstrap replicates a run uses.
pub fn bootstrap_reps(a: &RunArgs) -> usize {
    a.bootstrap.unwrap_or(if a.num <= 512 { 1000 } else { 0 })
}

/// Every model's settings: the file's `[models.NAME]` tables, then the command line's
/// `--weights MODEL=…`, `--backbone MODEL=…` and `--set MODEL.KEY=VALUE`; each checked (an
/// unknown key is refused with the model's name).
pub fn model_tables(
    a: &RunArgs,
    extras: &FileExtras,
) -> anyhow::Result<BTreeMap<String, ModelTable>> {
    let mut raw = extras.tables.clone();
    let mut put = |model: &str, key: &str, v: toml::Value| -> anyhow::Result<()> {
        let mut t = raw.entry(model.to_string()).or_default();
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts
            .pop()
            .filter(|k| !k.is_empty())
            .with_context(|| format!("`{model}.{key}`: no key"))?;
        for p in parts {
            let e = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match e {
                toml::Value::Table(x) => x,
                _ => anyhow::bail!("`{model}.{key}`: `{p}` is not a table"),
            };
        }
        t.insert(last.to_string(), v);
        Ok(())
    };
    for (flag, list, key) in [
        ("--weights", &a.weights, "weights"),
        ("--backbone", &a.backbone, "backbone"),
    ] {
        for e in list {
            match e.split_once('=') {
                Some((m, v)) if !m.is_empty() && !v.is_empty() => {
                    put(m, key, toml::Value::String(v.to_string()))?
                }
                _ => anyhow::bail!("{flag} takes MODEL=VALUE, got `{e}`"),
            }
        }
    }
    for e in &a.set {
        let (lhs, val) = e
            .split_once('=')
            .with_context(|| format!("--set takes MODEL.KEY=VALUE, got `{e}`"))?;
        let (model, key) = lhs
            .split_once('.')
            .with_context(|| format!("--set takes MODEL.KEY=VALUE, got `{e}`"))?;
        // A TOML value (number, boolean, array, …), else the text as a string.
        let v = toml::from_str::<toml::Table>(&format!("v = {val}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(val.to_string()));
        put(model, key, v)?;
    }
    let mut out = BTreeMap::new();
    for (name, t) in raw {
        let table: ModelTable = toml::Value::Table(t)
            .try_into()
            .with_context(|| format!("settings of model `{name}`"))?;
        out.insert(name, table);
    }
    Ok(out)
}

/// The resolved settings of each model of a plan, as a `[models.NAME]` table.
pub fn resolved_tables(plan: &RunPlan) -> anyhow::Result<BTreeMap<String, ModelTable>> {
    let mut out = BTreeMap::new();
    for m in &plan.models {
        let tune = serde_json::to_value(&m.tune)?
            .as_object()
            .cloned()
            .unwrap_or_default();
        out.insert(
            m.name.clone(),
            ModelTable {
                weights: m.spec.weights.clone(),
                backbone: None,
                dtype: m.spec.dtype.clone(),
                lora_rank: m.spec.lora_rank,
                variant: m.spec.variant.clone(),
                resolution: None,
                height: m.spec.height,
                width: m.spec.width,
                guidance: Some(m.guidance),
                train_samplers: Some(m.train.clone()),
                eval_samplers: Some(m.eval.clone()),
                tune: Some(tune),
                scores: (!m.scores.is_empty()).then(|| m.scores.clone()),
            },
        );
    }
    Ok(out)
}

/// Write the resolved configuration as `DIR/config.toml`.
pub fn save(
    a: &RunArgs,
    models: BTreeMap<String, ModelTable>,
    dir: &Path,
) -> anyhow::Result<Resolved> {
    let r = Resolved {
        methods: a.methods.clone(),
        train_samplers: a.train_samplers.clone(),
        eval_samplers: a.eval_samplers.clone(),
        reference_sampler: a.reference_sampler.clone(),
        seeds: a.seeds.clone(),
        num: a.num,
        batch: a.batch,
        device: a.device.clone(),
        bootstrap: bootstrap_reps(a),
        prompts: a.prompts.clone(),
        prompt_column: a.prompt_column.clone(),
        eval_data: a.eval_data.clone(),
        eval_subset: a.eval_subset.clone(),
        fid_ref: a.fid_ref.clone(),
        fid_mode: a.fid_mode.clone(),
        scores: a.scores.clone(),
        out: a.out.clone(),
        score_models: (!a.scores.is_empty()).then(|| ScoreModelsFile::of(&a.score_models)),
        models,
    };
    let text = format!(
        "# The configuration of this run, every option resolved; `adt-bench run --config` reads it.\n{}",
        toml::to_string(&r)?
    );
    std::fs::write(dir.join("config.toml"), text)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `adt-bench run ARGS` as `main` parses it (with the explicit options recorded).
    fn run_args(args: &[&str]) -> RunArgs {
        let app = crate::parse_args(["adt-bench", "run"].iter().chain(args)).unwrap();
        let crate::cli::Command::Run(a) = app.cmd else {
            panic!("not run")
        };
        *a
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bench.toml");
        std::fs::write(
            &cfg,
            "seeds = [0, 1, 2]\nnum = 32\neval_samplers = [\"ddim:10\", \"euler:20\"]\n\
             tune_args = \"--iters 4\"\nbootstrap = 50\n",
        )
        .unwrap();
        let a = run_args(&["--config", cfg.to_str().unwrap(), "-n", "16"]);
        let (r, _) = apply(&a).unwrap();
        assert_eq!(r.seeds, [0, 1, 2]);
        assert_eq!(r.num, 16, "the flag wins over the file");
        assert_eq!(r.eval_samplers, ["ddim:10", "euler:20"]);
        assert_eq!(r.tune_args.as_deref(), Some("--iters 4"));
        assert_eq!(bootstrap_reps(&r), 50);
        assert_eq!(
            r.methods,
            ["base", "ft", "adt", "ft-equal"],
            "defaults stay"
        );
        // The saved file reads back to the same options.
        save(&r, BTreeMap::new(), dir.path()).unwrap();
        let back: FileConfig =
            toml::from_str(&std::fs::read_to_string(dir.path().join("config.toml")).unwrap())
                .unwrap();
        assert_eq!(back.num, Some(16));
        assert_eq!(back.seeds, Some(vec![0, 1, 2]));
        assert!(
            back.score_models.is_none(),
            "no [score_models] without --scores"
        );

        // The score models' table fills the flags not given.
        std::fs::write(
            &cfg,
            "scores = [\"aesthetic\"]\n[score_models]\naesthetic_clip = \"/m/clip\"\n\
             aesthetic_head = \"/m/head.pth\"\nhps_model = \"/m/hps.pt\"\n",
        )
        .unwrap();
        let a2 = run_args(&[
            "--config",
            cfg.to_str().unwrap(),
            "--hps-model",
            "/cli/hps.pt",
        ]);
        let (r2, _) = apply(&a2).unwrap();
        assert_eq!(r2.scores, ["aesthetic"]);
        assert_eq!(r2.score_models.aesthetic_clip, "/m/clip");
        assert_eq!(
            r2.score_models.aesthetic_head.as_deref(),
            Some(Path::new("/m/head.pth"))
        );
        assert_eq!(r2.score_models.hps_model, "/cli/hps.pt", "the flag wins");
        assert_eq!(
            r2.score_models.clip_model, "openai/clip-vit-large-patch14",
            "defaults stay"
        );
        save(&r2, BTreeMap::new(), dir.path()).unwrap();
        let back: FileConfig =
            toml::from_str(&std::fs::read_to_string(dir.path().join("config.toml")).unwrap())
                .unwrap();
        let sm = back
            .score_models
            .expect("[score_models] saved with --scores");
        assert_eq!(sm.aesthetic_clip.as_deref(), Some("/m/clip"));
        assert_eq!(sm.hps_model.as_deref(), Some("/cli/hps.pt"));

        std::fs::write(&cfg, "seed = [1]\n").unwrap();
        let e = format!("{:#}", apply(&a).unwrap_err());
        assert!(e.contains("unknown field `seed`"), "{e}");
        // Without --config nothing changes.
        let plain = crate::cli::App::try_parse_from(["adt-bench", "run"]).unwrap();
        let crate::cli::Command::Run(p) = plain.cmd else {
            panic!()
        };
        assert_eq!(apply(&p).unwrap().0.num, 48);
    }

    #[test]
    fn per_model_tables_merge_file_flags_and_set_and_refuse_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bench.toml");
        std::fs::write(
            &cfg,
            "[tune]\nlambda = 2.0\n\n[models.sd15]\nweights = \"/m/sd15\"\nlora_rank = 4\n\n\
             [models.sd3]\neval_samplers = [\"flow-euler:28\"]\n[models.sd3.tune]\nh = 3\n",
        )
        .unwrap();
        let a = run_args(&[
            "--config",
            cfg.to_str().unwrap(),
            "--weights",
            "sd15=/cli/sd15",
            "--set",
            "sd3.dtype=f16",
            "--set",
            "sd3.tune.k=1",
            "--set",
            "sd15.resolution=256",
        ]);
        let (r, extras) = apply(&a).unwrap();
        assert_eq!(r.models, ["sd15", "sd3"], "the table's keys are the models");
        assert_eq!(extras.tune.as_ref().unwrap()["lambda"], 2.0);
        let t = model_tables(&r, &extras).unwrap();
        assert_eq!(
            t["sd15"].weights.as_deref(),
            Some("/cli/sd15"),
            "the flag wins"
        );
        assert_eq!(t["sd15"].lora_rank, Some(4));
        assert_eq!(t["sd15"].resolution, Some(256));
        assert_eq!(t["sd3"].dtype.as_deref(), Some("f16"));
        assert_eq!(
            t["sd3"].eval_samplers.as_ref().unwrap()[0].to_string(),
            "flow-euler:28"
        );
        let tune = t["sd3"].tune.as_ref().unwrap();
        assert_eq!((tune["h"].as_i64(), tune["k"].as_i64()), (Some(3), Some(1)));

        // Unknown keys and bad values are refused with the model's name.
        let bad = run_args(&["--set", "sd15.lora=4"]);
        let e = format!(
            "{:#}",
            model_tables(&bad, &FileExtras::default()).unwrap_err()
        );
        assert!(e.contains("sd15") && e.contains("lora"), "{e}");
        let bad = run_args(&["--set", "sd15.eval_samplers=[\"ddim\"]"]);
        let e = format!(
            "{:#}",
            model_tables(&bad, &FileExtras::default()).unwrap_err()
        );
        assert!(e.contains("name:steps"), "{e}");
        let bad = run_args(&["--set", "sd15"]);
        assert!(model_tables(&bad, &FileExtras::default()).is_err());
    }

    #[test]
    fn tune_args_set_only_what_they_name() {
        let o = tune_args_overlay("--lambda 2 -k 1 --disc-loss hinge --start 0..2").unwrap();
        let keys: Vec<&str> = o.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(o["lambda"], 2.0);
        assert_eq!(o["disc_loss"], "hinge");
        assert_eq!(o["start"], "0..2");
        let e = tune_args_overlay("--seed 3").unwrap_err().to_string();
        assert!(e.contains("cannot set `seed`"), "{e}");
        assert!(tune_args_overlay("--lamda 2").is_err());
        assert!(tune_args_overlay("--path sideways").is_err());
    }
}
