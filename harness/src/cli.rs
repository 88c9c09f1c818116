//! Command-line definitions (clap derive). Doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Fine-tune diffusion models with Adversarial Diffusion Tuning (ADT) and measure what it did.
///
/// Models and samplers are plugins behind a versioned C ABI; `tiny` (a small built-in pixel
/// model) and the standard samplers are built in. Start with `adt-bench plugins list`, then
/// `adt-bench sample --model tiny --sampler ddim:10`.
///
/// Exit codes: 0 success, 1 failure, 2 usage, 3 plugin incompatible, 4 data error,
/// 5 training diverged.
#[derive(Debug, Parser)]
#[command(
    name = "adt-bench",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct App {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Extra folder or library to search for plugins (repeatable); searched before
    /// ADT_PLUGIN_PATH and the executable's folder.
    #[arg(long = "plugin-path", global = true, value_name = "PATH")]
    pub plugin_path: Vec<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars, errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the benchmark on the embedded default. Until the tuning and FID stages land, this is
    /// the sampling stage: the built-in model with few-step samplers and a many-step reference
    /// on the same prompts and noise, sample grids, and the recognisability controls
    /// (background and shape-colour accuracy against the caption, residual noise).
    Run(RunArgs),
    /// List or check plugins.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Generate images with a model and a sampler.
    Sample(SampleArgs),
    /// Train a model with its plain diffusion loss (how the built-in tiny weights were made).
    Pretrain(PretrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum PluginsCmd {
    /// Every plugin found: name, kind, version, ABI, where it came from, and its samplers.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load one library and check it is a compatible plugin (exit code 3 if not).
    Check {
        /// Path to the dynamic library (`.so`, `.dylib`, `.dll`).
        path: PathBuf,
    },
}

/// Which model and how to load it.
#[derive(Debug, Args, Clone)]
pub struct ModelOpts {
    /// Model plugin name (see `adt-bench plugins list`).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Weights: `builtin` (the model's default), `random`, or a path. Passed to the plugin.
    #[arg(long)]
    pub weights: Option<String>,
    /// Device: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of a random initialisation (with --weights random).
    #[arg(long = "init-seed", default_value_t = 0)]
    pub init_seed: u64,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// Sampler and steps as `name:steps`, e.g. `ddim:20`, `dpm++2m:10`, `euler-a:30`.
    #[arg(long, default_value = "ddim:20")]
    pub sampler: String,
    /// Timestep spacing: leading, trailing or linspace (default: the model's).
    #[arg(long)]
    pub spacing: Option<String>,
    /// Classifier-free guidance scale (default: the model's; 1 disables guidance).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Number of images.
    #[arg(short = 'n', long = "num", default_value_t = 16)]
    pub num: usize,
    /// Images per model call.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the initial and per-step noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A prompt for every image (default: captions of the built-in data set's evaluation split).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Start from given noise: a safetensors file with a tensor `latents` of shape [N, C, H, W].
    #[arg(long = "init-latents", value_name = "FILE.safetensors")]
    pub init_latents: Option<PathBuf>,
    /// Output folder (PNG per image, grid.png, prompts.txt).
    #[arg(long, default_value = "samples")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// Training data: `builtin:shapes`, an image folder, parquet file(s), or webdataset shards.
    #[arg(long, default_value = "builtin:shapes")]
    pub data: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    pub iters: u64,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (warm-up then cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Seed of noise, timesteps and caption dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (checkpoint/, log.csv, state.json); rerunning resumes.
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Also write the final weights as f16 safetensors here (what is committed for `tiny`).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Stop after this many steps in this invocation (with a checkpoint); rerun to resume.
    #[arg(long = "stop-after", value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// Few-step samplers to evaluate, comma-separated `name:steps`.
    #[arg(
        long = "eval-samplers",
        default_value = "ddim:10,dpm++2m:10,euler-a:10",
        value_delimiter = ','
    )]
    pub eval_samplers: Vec<String>,
    /// The many-step reference sampler the few-step ones are compared with.
    #[arg(long = "reference-sampler", default_value = "ddim:50")]
    pub reference_sampler: String,
    /// Images per sampler (same prompts and initial noise for every sampler).
    #[arg(short = 'n', long = "num", default_value_t = 32)]
    pub num: usize,
    /// Images per model call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Guidance scale (default: the model's).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Output folder.
    #[arg(long, default_value = "runs/default")]
    pub out: PathBuf,
}
