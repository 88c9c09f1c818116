//! `run --config bench.toml`: the options as a TOML file, command-line flags overriding it, and
//! the fully resolved configuration written next to the report.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::RunArgs;

/// The options of `run` a TOML file may set (keys as the long flags, `_` for `-`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    models: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    train_samplers: Option<Vec<String>>,
    eval_samplers: Option<Vec<String>>,
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

/// The configuration a run used, every value resolved (saved as `config.toml`; `run --config`
/// reads it back).
#[derive(Debug, serde::Serialize)]
pub struct Resolved {
    pub models: Vec<String>,
    pub methods: Vec<String>,
    pub train_samplers: Vec<String>,
    pub eval_samplers: Vec<String>,
    pub seeds: Vec<u64>,
    pub num: usize,
    pub batch: usize,
    /// Per model: the guidance of its evaluation (the model's default unless set).
    pub guidance: Option<f32>,
    pub tune_args: String,
    pub device: String,
    pub weights: Vec<String>,
    pub backbone: Vec<String>,
    pub bootstrap: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<String>,
    pub out: PathBuf,
    /// Only with `scores`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_models: Option<ScoreModelsFile>,
}

/// `a` with the values of its `--config` file filled in wherever the command line did not
/// give the option.
pub fn apply(a: &RunArgs) -> anyhow::Result<RunArgs> {
    let mut r = a.clone();
    let Some(path) = &a.config else {
        return Ok(r);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let f: FileConfig =
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))?;
    let given = |id: &str| a.explicit.iter().any(|e| e == id);
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
        models, methods, train_samplers, eval_samplers, seeds, num, batch, tune_args, device,
        weights, backbone, scores, out;
        opt guidance, bootstrap
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
    Ok(r)
}

/// The bootstrap replicates a run uses.
pub fn bootstrap_reps(a: &RunArgs) -> usize {
    a.bootstrap.unwrap_or(if a.num <= 512 { 1000 } else { 0 })
}

/// Write the resolved configuration as `DIR/config.toml`.
pub fn save(a: &RunArgs, dir: &Path) -> anyhow::Result<Resolved> {
    let r = Resolved {
        models: a.models.clone(),
        methods: a.methods.clone(),
        train_samplers: a.train_samplers.clone(),
        eval_samplers: a.eval_samplers.clone(),
        seeds: a.seeds.clone(),
        num: a.num,
        batch: a.batch,
        guidance: a.guidance,
        tune_args: a.tune_args.clone(),
        device: a.device.clone(),
        weights: a.weights.clone(),
        backbone: a.backbone.clone(),
        bootstrap: bootstrap_reps(a),
        scores: a.scores.clone(),
        out: a.out.clone(),
        score_models: (!a.scores.is_empty()).then(|| ScoreModelsFile::of(&a.score_models)),
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
        a
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
        let r = apply(&a).unwrap();
        assert_eq!(r.seeds, [0, 1, 2]);
        assert_eq!(r.num, 16, "the flag wins over the file");
        assert_eq!(r.eval_samplers, ["ddim:10", "euler:20"]);
        assert_eq!(r.tune_args, "--iters 4");
        assert_eq!(bootstrap_reps(&r), 50);
        assert_eq!(r.methods, ["base", "ft", "adt"], "defaults stay");
        // The saved file reads back to the same options.
        save(&r, dir.path()).unwrap();
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
        let r2 = apply(&a2).unwrap();
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
        save(&r2, dir.path()).unwrap();
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
        assert_eq!(apply(&p).unwrap().num, 48);
    }
}
