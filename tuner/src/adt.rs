//! The ADT loop and the plain fine-tuning baseline (DESIGN §1), across the plugin boundary.
//!
//! Per iteration (ADT): a batch of real x0 with captions; a start index s per example on the
//! sampler's schedule; x_{t_s} = α·x0 + σ·ε and the sampler's rollout to x̂0 (examples that share
//! s run as one sub-batch); decode; one discriminator update on (x0, x̂0). Every H iterations a
//! generator update: ∂L_adv/∂x̂0 from the discriminator, through the plugin's `decode_vjp`, then
//! along the chosen gradient path to K trained evaluations per sub-batch (one `denoise_vjp` each),
//! plus λ·L_diff on fresh noise through `diffusion_loss`, then the plugin's optimizer step.
//!
//! `ft` makes the same number of generator updates on the same data stream with L_diff only.
//!
//! Everything random is derived from `(seed, iteration)`, the data stream is replayed on resume,
//! and checkpoints hold the model (through the plugin), the discriminator with its EMA twins and
//! optimizer, and the iteration — so a resumed run is bitwise the uninterrupted one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use adt_plugin_api::{HostTensor, OptimConfig, Plan, PlanRequest};
use adt_plugin_host::{Model, Samplers};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::Batcher;
use crate::disc::{DiscConfig, Discriminator};
use crate::paths::{
    GradPath, Rollout, backward_linear, full_backward, l2, pick_trained, step_state_of,
};
use crate::rollout::{self, Guidance};
use crate::{Error, Progress, Result};

/// Which method is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Adversarial Diffusion Tuning.
    Adt,
    /// Plain fine-tuning with the diffusion loss.
    Ft,
}

/// How the start index is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "index")]
pub enum StartDist {
    /// Uniform over the m steps (the image-to-image curriculum).
    Uniform,
    /// Always this index (0 = from pure noise at the first timestep).
    Fixed(usize),
    /// Uniform over the indices `lo..=hi` (clamped to the schedule): e.g. `0..=2` keeps the
    /// rollouts close to text-to-image.
    Range(usize, usize),
}

/// The discriminator's learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscSchedule {
    /// Linear warm-up over `warmup` iterations, then constant: the discriminator keeps its
    /// strength while the generator learns against it.
    Constant,
    /// The generator's shape over all iterations: warm-up, cosine decay to 10 %.
    Cosine,
}

impl DiscSchedule {
    /// What checkpoints written before the choice existed used.
    fn before_choice() -> Self {
        DiscSchedule::Cosine
    }
}

/// What the discriminator is shown of a generated image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscInput {
    /// The decoder's output as it is.
    #[default]
    Raw,
    /// Clamped to the image range [-1, 1] (no gradient where it clamps).
    Clamped,
    /// Clamped and rounded to the 8 bits a saved sample has, as the evaluation sees it; the
    /// rounding passes the gradient straight through.
    Quantized,
}

/// A generated image as the discriminator sees it (`[-1, 1]` images, see [`DiscInput`]).
pub fn as_evaluated(x: &HostTensor, how: DiscInput) -> HostTensor {
    let f = |v: f32| match how {
        DiscInput::Raw => v,
        DiscInput::Clamped => v.clamp(-1.0, 1.0),
        DiscInput::Quantized => adt_datasets::transform::signed_to_u8(v) as f32 / 127.5 - 1.0,
    };
    HostTensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|&v| f(v)).collect(),
    }
}

/// The gradient through [`as_evaluated`] at `x`: zero where the clamp is active, the
/// incoming gradient elsewhere (straight through the rounding).
pub fn as_evaluated_vjp(x: &HostTensor, g: &HostTensor, how: DiscInput) -> HostTensor {
    let data = match how {
        DiscInput::Raw => g.data.clone(),
        DiscInput::Clamped | DiscInput::Quantized => x
            .data
            .iter()
            .zip(&g.data)
            .map(|(&v, &d)| if (-1.0..=1.0).contains(&v) { d } else { 0.0 })
            .collect(),
    };
    HostTensor {
        shape: g.shape.clone(),
        data,
    }
}

/// Settings of a tuning run (saved with the checkpoint; a resume must match them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TuneConfig {
    /// `adt` or `ft`.
    pub method: Method,
    /// Iterations (discriminator updates for ADT).
    pub iters: u64,
    /// Examples per iteration.
    pub batch: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// The sampler's plan request (start index and img2img are set per example).
    pub plan: PlanRequest,
    /// Start index distribution.
    pub start: StartDist,
    /// Trained evaluations per rollout.
    pub k: usize,
    /// Trained evaluations drawn at random instead of equally spaced with a random offset.
    pub k_random: bool,
    /// Gradient path.
    pub path: GradPath,
    /// Guidance scale of the rollout (1 = no guidance).
    pub guidance: f32,
    /// The unconditional branch carries no gradient.
    pub detach_uncond: bool,
    /// Weight λ of the diffusion loss in the generator loss.
    pub lambda: f64,
    /// A generator update every H iterations.
    pub h: u64,
    /// Generator learning rate (peak).
    pub lr: f64,
    /// Warm-up iterations of both learning rates (then cosine decay to 10%).
    pub warmup: u64,
    /// Discriminator-only iterations at the start: the model is first updated after the
    /// discriminator has trained this long, so early generator steps do not follow a random
    /// discriminator. The FT baseline keeps the same update schedule.
    #[serde(default)]
    pub d_warmup: u64,
    /// Generator gradient clipping (global norm).
    pub clip: f64,
    /// Iterations whose generator gradients are accumulated into one update (≤ H).
    pub accum: u64,
    /// The discriminator.
    pub disc: DiscConfig,
    /// Stop after this many non-finite generator updates in a row.
    pub max_non_finite: u32,
    /// Checkpoint every this many iterations (and at the end).
    pub checkpoint_every: u64,
    /// Fraction of the diffusion term's captions replaced by the empty prompt, drawn per
    /// example (pretraining's rate keeps the unconditional branch that guidance uses trained).
    #[serde(default)]
    pub caption_dropout: f64,
    /// The discriminator's learning-rate schedule.
    #[serde(default = "DiscSchedule::before_choice")]
    pub d_schedule: DiscSchedule,
    /// What the discriminator sees of a generated image.
    #[serde(default)]
    pub d_input: DiscInput,
    /// Discriminator updates per iteration (on the same real and generated images, with
    /// fresh augmentation draws).
    #[serde(default = "one")]
    pub d_steps: u64,
    /// Keep a moving average of the model's weights with this decay (written by the plugin
    /// as `checkpoint/model/ema.safetensors`, what a run evaluates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

fn one() -> u64 {
    1
}

impl TuneConfig {
    /// Learning-rate factor at iteration `i` over the whole run: linear warm-up, cosine to 10%.
    pub fn lr_factor(&self, i: u64) -> f64 {
        schedule(i, self.warmup, self.iters)
    }

    /// The discriminator's learning-rate factor at iteration `i` (its own schedule).
    pub fn d_lr_factor(&self, i: u64) -> f64 {
        match self.d_schedule {
            DiscSchedule::Cosine => self.lr_factor(i),
            DiscSchedule::Constant if i < self.warmup => (i + 1) as f64 / self.warmup as f64,
            DiscSchedule::Constant => 1.0,
        }
    }

    /// Generator learning-rate factor at iteration `i`: the same schedule over the iterations
    /// after the discriminator warm-up.
    pub fn g_lr_factor(&self, i: u64) -> f64 {
        schedule(
            i.saturating_sub(self.d_warmup),
            self.warmup,
            self.iters.saturating_sub(self.d_warmup),
        )
    }

    /// Iteration `i` counted from the end of the discriminator warm-up, if past it.
    fn g_index(&self, i: u64) -> Option<u64> {
        i.checked_sub(self.d_warmup)
    }

    /// Whether iteration `i` (0-based) ends with a generator update.
    pub fn is_g_update(&self, i: u64) -> bool {
        self.g_index(i)
            .is_some_and(|j| (j + 1).is_multiple_of(self.h.max(1)))
    }

    /// Iterations accumulated into one generator update (1 ≤ accum ≤ H).
    pub fn accum_steps(&self) -> u64 {
        self.accum.clamp(1, self.h.max(1))
    }

    /// Whether iteration `i` contributes generator gradients: the last `accum` iterations
    /// before each update (the update happens at position H − 1 of each H).
    pub fn in_window(&self, i: u64) -> bool {
        let h = self.h.max(1);
        self.g_index(i)
            .is_some_and(|j| j % h + self.accum_steps() >= h)
    }

    /// Whether iteration `i` opens an accumulation window (gradients are cleared there).
    pub fn window_start(&self, i: u64) -> bool {
        let h = self.h.max(1);
        self.g_index(i)
            .is_some_and(|j| j % h + self.accum_steps() == h)
    }
}

/// Linear warm-up over `warmup` iterations, then cosine decay to 10% at `total`.
fn schedule(i: u64, warmup: u64, total: u64) -> f64 {
    if i < warmup {
        return (i + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let p = ((i - warmup) as f64 / span).min(1.0);
    0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// One row of the per-iteration log.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogRow {
    /// Iteration (1-based).
    pub iter: u64,
    /// Whether a generator update happened at this iteration.
    pub g_update: bool,
    /// Discriminator loss.
    pub loss_d: f64,
    /// Adversarial generator loss (on generator iterations).
    pub loss_adv: f64,
    /// Diffusion loss.
    pub loss_diff: f64,
    /// Mean real–real similarity (or real logit).
    pub disc_real: f64,
    /// Mean generated–real similarity (or generated logit).
    pub disc_fake: f64,
    /// disc_real − disc_fake.
    pub disc_gap: f64,
    /// Generator gradient norm (before clipping).
    pub grad_norm: f64,
    /// Norm of the gradient reaching x_{t_i} of each trained evaluation (‖∂L/∂x_{t_i}‖), by the
    /// evaluation's position in the full schedule: `index:norm` joined by `;`.
    pub eval_grad_norms: String,
    /// Norm of the cotangent on each trained evaluation's output (what its VJP receives).
    pub eval_cotangent_norms: String,
    /// Mean |per-image colour mean of x̂0 − that of x0| in [0, 1] units.
    pub color_mean_error: f64,
    /// Generator learning rate.
    pub lr: f64,
    /// The generator update was skipped (non-finite).
    pub skipped: bool,
    /// Seconds this iteration took.
    pub seconds: f64,
}

const LOG_HEADER: &str = "iter,g_update,loss_d,loss_adv,loss_diff,disc_real,disc_fake,disc_gap,grad_norm,eval_grad_norms,eval_cotangent_norms,color_mean_error,lr,skipped,seconds";

fn log_line(r: &LogRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3}",
        r.iter,
        r.g_update,
        r.loss_d,
        r.loss_adv,
        r.loss_diff,
        r.disc_real,
        r.disc_fake,
        r.disc_gap,
        r.grad_norm,
        r.eval_grad_norms,
        r.eval_cotangent_norms,
        r.color_mean_error,
        r.lr,
        r.skipped,
        r.seconds
    )
}

/// Mix a seed with indices (SplitMix-style), so every random draw has its own stream.
fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed ^ 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        z = z.wrapping_add(p.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z ^= z >> 31;
        z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 29;
    }
    z
}

fn slice(t: &HostTensor, idx: &[usize]) -> HostTensor {
    let per: usize = t.shape[1..].iter().product();
    let mut data = Vec::with_capacity(per * idx.len());
    for &i in idx {
        data.extend_from_slice(&t.data[i * per..(i + 1) * per]);
    }
    let mut shape = t.shape.clone();
    shape[0] = idx.len();
    HostTensor { shape, data }
}

fn scatter(dst: &mut HostTensor, idx: &[usize], src: &HostTensor) {
    let per: usize = dst.shape[1..].iter().product();
    for (j, &i) in idx.iter().enumerate() {
        dst.data[i * per..(i + 1) * per].copy_from_slice(&src.data[j * per..(j + 1) * per]);
    }
}

fn to_tensor(t: &HostTensor, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(t.data.clone(), t.shape.clone(), dev)
        .map_err(|e| Error::Invalid(format!("tensor: {e}")))
}

fn from_tensor(t: &Tensor) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let data = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::Invalid(format!("tensor: {e}")))?;
    Ok(HostTensor { shape, data })
}

/// Mean |colour mean of a − colour mean of b| per image and channel, for images in [-1, 1],
/// in [0, 1] units.
pub fn color_mean_error(a: &HostTensor, b: &HostTensor) -> f64 {
    let n = a.shape[0];
    let c = a.shape[1];
    let hw: usize = a.shape[2..].iter().product();
    let mut err = 0.0;
    for i in 0..n {
        for ch in 0..c {
            let off = (i * c + ch) * hw;
            let ma: f64 = a.data[off..off + hw].iter().map(|v| *v as f64).sum::<f64>() / hw as f64;
            let mb: f64 = b.data[off..off + hw].iter().map(|v| *v as f64).sum::<f64>() / hw as f64;
            err += (ma - mb).abs() / 2.0;
        }
    }
    err / (n * c) as f64
}

/// A tuning session's moving parts.
pub struct Tuner<'a> {
    /// The generator (model plugin).
    pub model: &'a mut Model,
    /// The sampler plugin.
    pub samplers: &'a Samplers,
    /// The discriminator (ADT only).
    pub disc: Option<Discriminator>,
    /// Data.
    pub data: Batcher,
    /// Device of the discriminator.
    pub device: Device,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    iter: u64,
    disc_steps: u64,
    config: TuneConfig,
}

/// Run (or resume) a tuning session writing to `out`: `checkpoint/` (model through the plugin,
/// `disc.safetensors`, `state.json`), `log.csv`. Returns the rows logged in this invocation.
/// `reset_optimizer` resumes with a fresh optimizer state ([`crate::load_model_state`]).
pub fn tune(
    t: &mut Tuner<'_>,
    cfg: &TuneConfig,
    out: &Path,
    stop_after: Option<u64>,
    reset_optimizer: bool,
    progress: &mut dyn Progress,
) -> Result<Vec<LogRow>> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    if cfg.method == Method::Adt && t.disc.is_none() {
        return Err(Error::Invalid("ADT needs a discriminator".into()));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let log_path = out.join("log.csv");
    let ckpt = checkpoint_dir(out);
    let mut start = 0;
    if let Some(dir) = &ckpt {
        let text = std::fs::read_to_string(dir.join("state.json")).map_err(io(dir))?;
        let st: State = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
        if st.config != *cfg {
            return Err(Error::Invalid(format!(
                "{} holds a run with different settings; use another --out or the same settings",
                out.display()
            )));
        }
        crate::load_model_state(t.model, &dir.join("model"), reset_optimizer)?;
        if reset_optimizer {
            progress.event("the optimizer starts afresh (--reset-optimizer)");
        }
        if let Some(d) = t.disc.as_mut() {
            let bytes = std::fs::read(dir.join("disc.safetensors")).map_err(io(dir))?;
            let map = candle_core::safetensors::load_buffer(&bytes, &t.device)
                .map_err(|e| Error::Invalid(format!("disc checkpoint: {e}")))?;
            d.restore(&|k| map.get(k).cloned(), st.disc_steps)
                .map_err(|e| Error::Invalid(format!("disc checkpoint: {e}")))?;
        }
        start = st.iter;
        progress.event(&format!("resuming from iteration {start}"));
        for _ in 0..start {
            t.data.next_batch(cfg.batch, progress)?;
        }
        // Keep the log consistent with the checkpoint: drop rows written after it.
        crate::trim_log(&log_path, start)?;
    } else {
        std::fs::write(&log_path, format!("{LOG_HEADER}\n")).map_err(io(&log_path))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let mut end = stop_after
        .map(|n| (start + n).min(cfg.iters))
        .unwrap_or(cfg.iters);
    // A stop inside a generator accumulation window would lose the gradients gathered so far
    // (they live in the plugin, not in the checkpoint): run on to the window's update.
    let asked = end;
    while end < cfg.iters && end > start && cfg.in_window(end - 1) && !cfg.is_g_update(end - 1) {
        end += 1;
    }
    if end != asked {
        progress.event(&format!(
            "stopping after iteration {end}, not {asked}: the generator's accumulation window \
             ends there (a stop inside it could not resume exactly)"
        ));
    }
    let uncond = if cfg.guidance != 1.0 {
        Some(t.model.encode_prompts(&[String::new()])?)
    } else {
        None
    };
    let mut plans: BTreeMap<usize, Plan> = BTreeMap::new();
    let mut non_finite = 0u32;
    let mut rows = Vec::new();
    // Window accumulators of the generator update.
    let mut acc_adv = 0.0;
    let mut acc_diff = 0.0;
    let mut acc_norms: Vec<(usize, f64)> = Vec::new();
    let mut acc_cot: Vec<(usize, f64)> = Vec::new();
    let mut acc_bad = false;
    for i in start..end {
        let t0 = std::time::Instant::now();
        let batch = t.data.next_batch(cfg.batch, progress)?;
        let lr = cfg.lr * cfg.g_lr_factor(i);
        let mut row = LogRow {
            iter: i + 1,
            lr,
            loss_adv: f64::NAN,
            loss_diff: f64::NAN,
            loss_d: f64::NAN,
            disc_real: f64::NAN,
            disc_fake: f64::NAN,
            disc_gap: f64::NAN,
            grad_norm: f64::NAN,
            color_mean_error: f64::NAN,
            ..Default::default()
        };
        let in_window = cfg.in_window(i);
        if cfg.window_start(i) {
            t.model.zero_grad()?;
            acc_adv = 0.0;
            acc_diff = 0.0;
            acc_norms.clear();
            acc_cot.clear();
            acc_bad = false;
        }
        let divisor = cfg.accum_steps() as f64;
        // FT outside the accumulation window has nothing to do with this batch (it is drawn
        // only so both methods see the same data stream).
        let x0 = if cfg.method == Method::Adt || in_window {
            Some(t.model.encode_images(&batch.images)?)
        } else {
            None
        };
        if let (Method::Adt, Some(x0)) = (cfg.method, &x0) {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, &[i, 0]));
            let m = cfg.plan.steps;
            let starts: Vec<usize> = (0..cfg.batch)
                .map(|_| match cfg.start {
                    StartDist::Uniform => rng.random_range(0..m),
                    StartDist::Fixed(s) => s.min(m - 1),
                    StartDist::Range(lo, hi) => {
                        let hi = hi.min(m - 1);
                        rng.random_range(lo.min(hi)..=hi)
                    }
                })
                .collect();
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (j, &s) in starts.iter().enumerate() {
                groups.entry(s).or_default().push(j);
            }
            let mut xhat = HostTensor {
                shape: x0.shape.clone(),
                data: vec![0.0; x0.data.len()],
            };
            let mut runs = Vec::new();
            for (&s, idx) in &groups {
                if let std::collections::btree_map::Entry::Vacant(e) = plans.entry(s) {
                    let mut req = cfg.plan.clone();
                    req.start_index = s;
                    req.img2img = true;
                    e.insert(t.samplers.plan(&req)?);
                }
                let plan = &plans[&s];
                let caps: Vec<String> = idx.iter().map(|&j| batch.captions[j].clone()).collect();
                let cond = t.model.encode_prompts(&caps)?;
                let g = Guidance {
                    cond,
                    uncond,
                    scale: cfg.guidance,
                };
                let sub = slice(x0, idx);
                let mut rrng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, &[i, 2, s as u64]));
                let trace = rollout::run(
                    t.model,
                    plan,
                    &sub.shape,
                    Some(&sub),
                    None,
                    g,
                    &mut rrng,
                    |_, _| {},
                )?;
                scatter(&mut xhat, idx, trace.result());
                runs.push((s, idx.clone(), cond, trace));
            }
            let decoded = t.model.decode(&xhat)?;
            let fake_img = as_evaluated(&decoded, cfg.d_input);
            row.color_mean_error = color_mean_error(&fake_img, &batch.images);
            let disc = t
                .disc
                .as_mut()
                .ok_or_else(|| Error::Invalid("no discriminator".into()))?;
            let real_t = to_tensor(&batch.images, &t.device)?;
            let fake_t = to_tensor(&fake_img, &t.device)?;
            let dlr = disc.config().lr * cfg.d_lr_factor(i);
            let mut ds = disc.train_step(&real_t, &fake_t, mix(cfg.seed, &[i, 3]), dlr)?;
            for r in 1..cfg.d_steps.max(1) {
                ds = disc.train_step(&real_t, &fake_t, mix(cfg.seed, &[i, 3, r]), dlr)?;
            }
            row.loss_d = ds.loss_d;
            row.disc_real = ds.real;
            row.disc_fake = ds.fake;
            row.disc_gap = ds.real - ds.fake;
            if in_window {
                let (la, g_img) = disc.generator_grad(&real_t, &fake_t, mix(cfg.seed, &[i, 4]))?;
                let g_img = as_evaluated_vjp(&decoded, &from_tensor(&g_img)?, cfg.d_input);
                let g_lat = t.model.decode_vjp(&xhat, &g_img)?;
                acc_adv += la / divisor;
                acc_bad |= !la.is_finite();
                let scale = 1.0 / divisor;
                for (s, idx, cond, trace) in &runs {
                    let plan = &plans[s];
                    let mut g = slice(&g_lat, idx);
                    for v in &mut g.data {
                        *v *= scale as f32;
                    }
                    let guidance = Guidance {
                        cond: *cond,
                        uncond,
                        scale: cfg.guidance,
                    };
                    let r = Rollout {
                        plan,
                        trace,
                        guidance: &guidance,
                        detach_uncond: cfg.detach_uncond,
                    };
                    let mut krng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, &[i, 5, *s as u64]));
                    let (adj, trained) = match cfg.path {
                        GradPath::Full => {
                            let adj = full_backward(t.model, r, &g)?;
                            let all = (0..plan.evals.len())
                                .filter(|&k| adj.outputs[k].is_some())
                                .collect();
                            (adj, all)
                        }
                        path => {
                            let trained =
                                pick_trained(plan.evals.len(), cfg.k, cfg.k_random, &mut krng);
                            (backward_linear(t.model, r, path, &trained, &g)?, trained)
                        }
                    };
                    for k in trained {
                        let at = global_eval(plan, k);
                        if let Some(o) = &adj.outputs[k] {
                            acc_cot.push((at, l2(o) / scale));
                        }
                        if let Some(st) =
                            step_state_of(plan, k).and_then(|j| adj.states[j].as_ref())
                        {
                            acc_norms.push((at, l2(st) / scale));
                        }
                    }
                }
            }
            for (_, _, cond, _) in runs {
                t.model.release(cond)?;
            }
        }
        if in_window && let Some(x0) = &x0 {
            // λ·L_diff for ADT, L_diff alone for FT, on fresh noise.
            let weight = match cfg.method {
                Method::Adt => cfg.lambda,
                Method::Ft => 1.0,
            };
            let captions =
                drop_captions(&batch.captions, cfg.caption_dropout, mix(cfg.seed, &[i, 6]));
            let cond_all = t.model.encode_prompts(&captions)?;
            let l =
                t.model
                    .diffusion_loss(x0, cond_all, mix(cfg.seed, &[i, 1]), weight / divisor)?;
            t.model.release(cond_all)?;
            acc_diff += l / divisor;
            acc_bad |= !l.is_finite();
        }
        if cfg.is_g_update(i) {
            row.g_update = true;
            row.loss_adv = if cfg.method == Method::Adt {
                acc_adv
            } else {
                f64::NAN
            };
            row.loss_diff = acc_diff;
            row.eval_grad_norms = summarize_norms(&acc_norms);
            row.eval_cotangent_norms = summarize_norms(&acc_cot);
            let stats = if acc_bad {
                t.model.zero_grad()?;
                None
            } else {
                let stats = t.model.step(&OptimConfig {
                    clip_grad_norm: Some(cfg.clip),
                    ema_decay: cfg.ema,
                    ..OptimConfig::adamw(lr)
                })?;
                if cfg.ema.is_some() && !stats.ema {
                    return Err(Error::Invalid(
                        "the model plugin keeps no moving average of its weights; tune \
                         without --ema"
                            .into(),
                    ));
                }
                Some(stats)
            };
            row.grad_norm = stats.as_ref().map_or(f64::NAN, |s| s.grad_norm);
            row.skipped = stats.as_ref().is_none_or(|s| s.skipped_non_finite);
            if row.skipped {
                non_finite += 1;
                progress.event(&format!(
                    "iteration {}: non-finite generator loss or gradient, update skipped ({non_finite} in a row)",
                    i + 1
                ));
                if non_finite >= cfg.max_non_finite {
                    return Err(Error::Diverged {
                        reason: format!(
                            "{non_finite} non-finite generator updates in a row at iteration {}; \
                             the last good checkpoint is in {}",
                            i + 1,
                            out.join("checkpoint").display()
                        ),
                    });
                }
            } else {
                non_finite = 0;
            }
        }
        row.seconds = t0.elapsed().as_secs_f64();
        writeln!(log, "{}", log_line(&row)).map_err(io(&log_path))?;
        progress.update(
            i + 1,
            cfg.iters,
            &format!(
                "D {:.3} gap {:.3} adv {:.3} diff {:.4} {:.1}s/it",
                row.loss_d, row.disc_gap, row.loss_adv, row.loss_diff, row.seconds
            ),
        );
        rows.push(row);
        let last = i + 1 == end;
        if (i + 1) % cfg.checkpoint_every.max(1) == 0 || last {
            // Never inside a generator accumulation window (only at its end, or outside one:
            // discriminator-only iterations), so no half-accumulated gradient is ever needed
            // on resume.
            if cfg.is_g_update(i) || !cfg.in_window(i) || last {
                save_checkpoint(t, out, cfg, i + 1)?;
            }
        }
    }
    if let Some(u) = uncond {
        t.model.release(u)?;
    }
    Ok(rows)
}

/// `captions` with each replaced by the empty prompt with probability `p` (drawn from `seed`).
pub fn drop_captions(captions: &[String], p: f64, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = p.clamp(0.0, 1.0);
    captions
        .iter()
        .map(|c| {
            if p > 0.0 && rng.random_bool(p) {
                String::new()
            } else {
                c.clone()
            }
        })
        .collect()
}

/// Index of evaluation `k` of a plan counted from the schedule's first evaluation, so norms of
/// rollouts with different start indices line up (evaluations skipped by the start come first).
fn global_eval(plan: &Plan, k: usize) -> usize {
    // Every step of these plans has the same number of evaluations.
    let per = plan.evals.len() / plan.steps.len().max(1);
    plan.start_index * per.max(1) + k
}

fn summarize_norms(norms: &[(usize, f64)]) -> String {
    let mut by: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for &(k, n) in norms {
        let e = by.entry(k).or_default();
        e.0 += n;
        e.1 += 1;
    }
    by.iter()
        .map(|(k, (s, c))| format!("{k}:{:.4e}", s / *c as f64))
        .collect::<Vec<_>>()
        .join(";")
}

/// The checkpoint folder to resume from: `checkpoint`, or `checkpoint.old` when a crash came
/// between the two renames of [`save_checkpoint`].
fn checkpoint_dir(out: &Path) -> Option<PathBuf> {
    let c = out.join("checkpoint");
    if c.join("state.json").exists() {
        return Some(c);
    }
    let old = out.join("checkpoint.old");
    old.join("state.json").exists().then_some(old)
}

/// Write a complete checkpoint into `checkpoint.tmp`, then swap it in with renames: a reader
/// sees either the previous checkpoint or the new one, never a mixture, and never a
/// non-finite one (the generator step skips non-finite updates; the values are checked here).
fn save_checkpoint(t: &mut Tuner<'_>, out: &Path, cfg: &TuneConfig, iter: u64) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    t.model.save_state(&tmp.join("model"))?;
    let mut disc_steps = 0;
    if let Some(d) = &t.disc {
        disc_steps = d.steps();
        let state = d.state();
        for (name, v) in &state {
            let finite = v
                .flatten_all()
                .and_then(|v| v.to_vec1::<f32>())
                .map(|v| v.iter().all(|x| x.is_finite()))
                .unwrap_or(false);
            if !finite {
                return Err(Error::Diverged {
                    reason: format!(
                        "discriminator tensor {name} is not finite; checkpoint not written"
                    ),
                });
            }
        }
        let map: std::collections::HashMap<String, Tensor> = state.into_iter().collect();
        candle_core::safetensors::save(&map, tmp.join("disc.safetensors"))
            .map_err(|e| Error::Invalid(format!("disc checkpoint: {e}")))?;
    }
    let st = State {
        iter,
        disc_steps,
        config: cfg.clone(),
    };
    let text = serde_json::to_string_pretty(&st).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), text).map_err(io(&tmp))?;
    crate::swap_in_checkpoint(out, &tmp)
}

/// Shortcut for the built-in model: a discriminator on the committed shapes encoder.
pub fn shapes_discriminator(cfg: DiscConfig, seed: u64, dev: &Device) -> Result<Discriminator> {
    let enc = crate::backbone::ShapesEncoder::builtin(dev)?;
    Discriminator::new(Box::new(enc), cfg, seed, dev)
}

/// A discriminator on a DINOv2 backbone (the paper's choice for the SD family).
pub fn dinov2_discriminator(
    path: &std::path::Path,
    cfg: DiscConfig,
    seed: u64,
    dev: &Device,
) -> Result<Discriminator> {
    let net = if path.as_os_str() == "random" {
        crate::dinov2::Dinov2::random_vits14(seed, dev)?
    } else {
        crate::dinov2::Dinov2::load_hf(path, dev)?
    };
    Discriminator::new(Box::new(net), cfg, seed, dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(h: u64, accum: u64, d_warmup: u64) -> TuneConfig {
        TuneConfig {
            method: Method::Adt,
            iters: 20,
            batch: 1,
            seed: 0,
            plan: PlanRequest {
                sampler: "ddim".into(),
                steps: 4,
                schedule: adt_plugin_api::NoiseSchedule::Discrete {
                    alphas_cumprod: vec![0.5; 10],
                },
                parameterization: adt_plugin_api::Parameterization::Eps,
                spacing: None,
                steps_offset: 0,
                start_index: 0,
                eta: 0.0,
                set_alpha_to_one: None,
                img2img: false,
            },
            start: StartDist::Uniform,
            k: 1,
            k_random: false,
            path: GradPath::Adt,
            guidance: 1.0,
            detach_uncond: false,
            lambda: 0.5,
            h,
            lr: 1e-4,
            warmup: 2,
            d_warmup,
            clip: 1.0,
            accum,
            disc: DiscConfig::default(),
            max_non_finite: 3,
            checkpoint_every: 5,
            caption_dropout: 0.0,
            d_schedule: DiscSchedule::Cosine,
            d_input: DiscInput::Raw,
            d_steps: 1,
            ema: None,
        }
    }

    #[test]
    fn the_discriminator_keeps_its_learning_rate_after_its_warm_up() {
        let mut c = cfg(2, 1, 5);
        c.d_schedule = DiscSchedule::Constant;
        let f: Vec<f64> = (0..20).map(|i| c.d_lr_factor(i)).collect();
        assert_eq!(&f[..3], &[0.5, 1.0, 1.0]);
        assert!(f[2..].iter().all(|&v| v == 1.0), "{f:?}");
        // The generator still decays; the cosine choice follows the run's schedule.
        assert!(c.g_lr_factor(19) < 0.2);
        c.d_schedule = DiscSchedule::Cosine;
        assert_eq!(c.d_lr_factor(19), c.lr_factor(19));
        assert!(c.d_lr_factor(19) < 0.2);
        // A checkpoint written before the choice existed resumes with the schedule it used.
        let mut v = serde_json::to_value(&c).unwrap();
        for k in ["d_schedule", "d_input", "d_steps", "caption_dropout"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let old: TuneConfig = serde_json::from_value(v).unwrap();
        assert_eq!(
            (
                old.d_schedule,
                old.d_input,
                old.d_steps,
                old.caption_dropout
            ),
            (DiscSchedule::Cosine, DiscInput::Raw, 1, 0.0)
        );
    }

    #[test]
    fn captions_are_dropped_at_the_given_rate_and_reproducibly() {
        let caps: Vec<String> = (0..20_000).map(|i| format!("a shape {i}")).collect();
        let d = drop_captions(&caps, 0.1, 3);
        let empty = d.iter().filter(|c| c.is_empty()).count() as f64 / caps.len() as f64;
        assert!((empty - 0.1).abs() < 0.01, "{empty}");
        // The others are untouched and in place; the same seed drops the same ones.
        assert!(d.iter().zip(&caps).all(|(a, b)| a.is_empty() || a == b));
        assert_eq!(d, drop_captions(&caps, 0.1, 3));
        assert_ne!(d, drop_captions(&caps, 0.1, 4));
        assert_eq!(drop_captions(&caps, 0.0, 3), caps);
        assert!(drop_captions(&caps, 1.0, 3).iter().all(String::is_empty));
    }

    #[test]
    fn generated_images_reach_the_discriminator_as_the_evaluation_sees_them() {
        let x = HostTensor {
            shape: vec![5],
            data: vec![-1.7, -0.5, 0.0021, 0.999, 1.3],
        };
        let g = HostTensor {
            shape: vec![5],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0],
        };
        assert_eq!(as_evaluated(&x, DiscInput::Raw), x);
        assert_eq!(as_evaluated_vjp(&x, &g, DiscInput::Raw), g);
        let c = as_evaluated(&x, DiscInput::Clamped);
        assert_eq!(c.data, [-1.0, -0.5, 0.0021, 0.999, 1.0]);
        let q = as_evaluated(&x, DiscInput::Quantized);
        // What an 8-bit image file holds, read back: 0, 64, 128, 255 and 255 of 255.
        for (v, level) in q.data.iter().zip([0u8, 64, 128, 255, 255]) {
            assert_eq!(*v, level as f32 / 127.5 - 1.0);
        }
        // No gradient where the clamp is active; straight through the rounding.
        for how in [DiscInput::Clamped, DiscInput::Quantized] {
            assert_eq!(
                as_evaluated_vjp(&x, &g, how).data,
                [0.0, 2.0, 3.0, 4.0, 0.0]
            );
        }
    }

    #[test]
    fn generator_updates_start_after_the_discriminator_warm_up() {
        let c = cfg(3, 2, 5);
        let updates: Vec<u64> = (0..20).filter(|&i| c.is_g_update(i)).collect();
        assert_eq!(updates, [7, 10, 13, 16, 19]);
        let window: Vec<u64> = (0..20).filter(|&i| c.in_window(i)).collect();
        assert_eq!(window, [6, 7, 9, 10, 12, 13, 15, 16, 18, 19]);
        let starts: Vec<u64> = (0..20).filter(|&i| c.window_start(i)).collect();
        assert_eq!(starts, [6, 9, 12, 15, 18]);
        // The generator's schedule restarts at the end of the warm-up; the discriminator's not.
        assert_eq!(c.g_lr_factor(5), 0.5);
        assert_eq!(c.g_lr_factor(6), 1.0);
        assert_eq!(c.lr_factor(5), schedule(5, 2, 20));
        assert!((c.g_lr_factor(19) - schedule(14, 2, 15)).abs() < 1e-15);
        // Without a warm-up: the original schedule.
        let c0 = cfg(3, 1, 0);
        let u0: Vec<u64> = (0..9).filter(|&i| c0.is_g_update(i)).collect();
        assert_eq!(u0, [2, 5, 8]);
        assert_eq!(c0.g_lr_factor(7), c0.lr_factor(7));
    }
}
