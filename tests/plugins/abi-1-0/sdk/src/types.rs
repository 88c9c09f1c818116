//! The JSON vocabulary of the boundary: model descriptions, sampler plans, optimizer settings.
//! These are serde types; their JSON form is part of the ABI (fields may be added with
//! `#[serde(default)]` in a minor version, never removed or renamed within a major).

use serde::{Deserialize, Serialize};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// The noise ε (x_t = α x0 + σ ε).
    Eps,
    /// The velocity v = α ε − σ x0 (Salimans & Ho).
    V,
    /// Flow matching: the velocity ε − x0 of x_t = (1 − s) x0 + s ε.
    Flow,
}

/// A model's training noise schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoiseSchedule {
    /// Discrete variance-preserving schedule: ᾱ_t for t = 0..N−1 (model time is the index).
    Discrete {
        /// ᾱ_t (alphas_cumprod), one per training timestep.
        alphas_cumprod: Vec<f64>,
    },
    /// Rectified flow (SD3): σ ∈ [0, 1], model time = `num_train_timesteps`·σ.
    Flow {
        /// Number of training timesteps (1000 for SD3).
        num_train_timesteps: usize,
        /// The scheduler's shift (3.0 for SD3).
        shift: f64,
    },
}

/// Everything the host needs to know about a model instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    /// Model name as the plugin calls it (`tiny`, `sd15`, …).
    pub name: String,
    /// Model family, for reports.
    pub family: String,
    /// What the denoiser predicts.
    pub parameterization: Parameterization,
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// Latent shape `[C, H, W]` (equals `image_shape` for pixel models).
    pub latent_shape: [usize; 3],
    /// Image shape `[3, H, W]`.
    pub image_shape: [usize; 3],
    /// Total parameter count.
    pub parameters: u64,
    /// Trainable parameter count (e.g. only LoRA adapters).
    pub trainable_parameters: u64,
    /// The guidance scale the model is meant to be sampled with.
    pub default_guidance: f32,
    /// The timestep spacing the model is meant to be sampled with.
    pub default_spacing: Spacing,
    /// `steps_offset` of the model's scheduler config.
    pub steps_offset: usize,
    /// diffusers' `set_alpha_to_one` of the model's scheduler config.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// Content hash of the loaded weights (hex), for manifests.
    pub weights_hash: Option<String>,
    /// Anything else the plugin wants recorded.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// `leading`: t = i·(N / m) + steps_offset.
    Leading,
    /// `trailing`: t = round(N − i·N/m) − 1; starts at N − 1.
    Trailing,
    /// `linspace`: m points from 0 to N − 1, rounded (integer schedulers) or kept (Euler).
    Linspace,
}

/// A request for a sampler plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// Sampler name (`ddim`, `euler`, …).
    pub sampler: String,
    /// Number of inference steps m.
    pub steps: usize,
    /// The model's schedule.
    pub schedule: NoiseSchedule,
    /// The model's parameterization.
    pub parameterization: Parameterization,
    /// Timestep spacing; the sampler's diffusers default when absent.
    #[serde(default)]
    pub spacing: Option<Spacing>,
    /// diffusers' `steps_offset` (0 when absent).
    #[serde(default)]
    pub steps_offset: usize,
    /// Start index s into the m steps for image-to-image (0 = start from pure noise).
    #[serde(default)]
    pub start_index: usize,
    /// DDIM η (0 = deterministic). Only `ddim` reads it.
    #[serde(default)]
    pub eta: f64,
    /// diffusers' `set_alpha_to_one` (DDIM/DDPM final step): `true` ends at ᾱ = 1 (a clean
    /// sample), `false` at ᾱ_0 (what SD's scheduler config says). Sampler default when absent.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// Image-to-image: start from `α x0 + σ ε` at the start index even when it is 0. When
    /// false, start index 0 means text-to-image (pure noise scaled as diffusers does).
    #[serde(default)]
    pub img2img: bool,
}

/// What a term of a linear combination refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Src {
    /// State `j` of the plan (state 0 is the start; state i+1 is the result of step i).
    State(usize),
    /// The raw model output of evaluation `k`.
    Out(usize),
    /// Fresh standard-normal noise draw `n` (each index is drawn once per rollout).
    Noise(usize),
}

/// One term `coef · src` of a linear combination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Term {
    /// The quantity.
    pub src: Src,
    /// Its coefficient.
    pub coef: f64,
}

/// One model evaluation of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEval {
    /// Model time passed to the denoiser.
    pub t: f64,
    /// Signal scale α of the model input at this time (x = α x0 + σ ε).
    pub alpha: f64,
    /// Noise scale σ of the model input.
    pub sigma: f64,
    /// The network input as a linear combination of states and earlier outputs.
    pub input: Vec<Term>,
}

/// One sampler step: the evaluations it runs, then the next state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Indices of the evaluations executed in this step, in order.
    pub evals: Vec<usize>,
    /// The next state as a linear combination of states, outputs and noise.
    pub next: Vec<Term>,
    /// (α, σ) of the next state.
    pub alpha_next: f64,
    /// See `alpha_next`.
    pub sigma_next: f64,
}

/// A sampler as an explicit linear scheme. Executing it:
/// `state[0] = start_alpha·x0 + start_sigma·ε` (x0 = 0 for text-to-image), then for every step
/// run its evaluations (input = Σ coef·src, output = model(input, t)) and set
/// `state[i+1] = Σ coef·src` of `next`. The result is the last state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Sampler name.
    pub sampler: String,
    /// Number of inference steps m of the full schedule.
    pub num_inference_steps: usize,
    /// The start index s.
    pub start_index: usize,
    /// The full schedule's timesteps (diffusers' `scheduler.timesteps`), before the start index cut.
    pub timesteps: Vec<f64>,
    /// The full schedule's sigmas in the k-diffusion sense (σ/α), with the final 0, where the
    /// sampler defines them (Euler-family, DPM++, flow).
    pub sigmas: Option<Vec<f64>>,
    /// α of state 0.
    pub start_alpha: f64,
    /// σ of state 0.
    pub start_sigma: f64,
    /// Evaluations, in execution order.
    pub evals: Vec<PlanEval>,
    /// Steps, in execution order.
    pub steps: Vec<PlanStep>,
    /// Number of distinct noise draws the steps reference.
    pub noise_draws: usize,
}

/// A sampler a sampler plugin offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerInfo {
    /// Name used on the command line (`name:steps`).
    pub name: String,
    /// Order of accuracy of the deterministic scheme (1 for Euler/DDIM, 2 for Heun/DPM++2M).
    pub order: u32,
    /// Whether it draws fresh noise per step.
    pub stochastic: bool,
    /// Model evaluations per step.
    pub evals_per_step: u32,
    /// Schedule kinds it supports (`discrete`, `flow`).
    pub schedules: Vec<String>,
    /// The diffusers class it mirrors.
    pub mirrors: String,
    /// One line of help.
    pub description: String,
}

/// Optimizer settings for one `step` call (AdamW).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Learning rate for this step (schedules are applied by the host).
    pub lr: f64,
    /// Adam β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam β2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (none when absent).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Divide accumulated gradients by this before the update (gradient accumulation).
    #[serde(default = "default_one")]
    pub grad_scale_divisor: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_one() -> f64 {
    1.0
}

impl OptimConfig {
    /// AdamW with the usual defaults at a learning rate.
    pub fn adamw(lr: f64) -> Self {
        OptimConfig {
            lr,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: 0.0,
            clip_grad_norm: None,
            grad_scale_divisor: 1.0,
        }
    }
}

/// What an optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether clipping scaled the gradient down.
    pub clipped: bool,
    /// Whether the update was skipped because a gradient was not finite.
    pub skipped_non_finite: bool,
    /// Optimizer step count after this call.
    pub step: u64,
}
