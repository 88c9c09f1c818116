//! A template model plugin for adt-bench: a minimal pixel-space denoiser that implements every
//! call of the plugin contract in plain Rust, with hand-written gradients, so each piece of
//! the contract is visible in a few lines. Copy this crate, rename it, and replace the model
//! (`Params::forward` and its gradients) with yours; `adt-bench plugins check --conformance`
//! tells you whether the result keeps the contract.
//!
//! The model predicts the noise ε of a 16×16 RGB image at discrete time t:
//!
//! ```text
//! y = (A + τ·B)·x + b + e(prompt),   τ = t / N
//! ```
//!
//! a per-pixel 3×3 colour mix A, its time-dependent part B, a bias b and a prompt embedding
//! e (the mean of one learned 3-vector per word, words hashed into 64 buckets). It is linear,
//! so it samples colour fields rather than pictures; what matters here is the plumbing.

use std::collections::HashMap;
use std::path::Path;

use adt_plugin_api::{
    DenoiseArgs, HostTensor, ModelDescription, ModelPlugin, NoiseSchedule, OptimConfig,
    Parameterization, PluginError, PluginResult, Spacing, StepStats, TensorRef,
};
use serde::{Deserialize, Serialize};

/// Image side in pixels.
const SIZE: usize = 16;
/// Colour channels.
const C: usize = 3;
/// Word buckets of the prompt embedding.
const VOCAB: usize = 64;
/// Training timesteps.
const STEPS: usize = 1000;
/// The largest checkpoint `load_state` reads (a bound on untrusted input).
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The parameters, flat: A (9), B (9), b (3), E (VOCAB·3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params(Vec<f32>);

const A: usize = 0;
const B: usize = 9;
const BIAS: usize = 18;
const EMB: usize = 21;
const COUNT: usize = EMB + VOCAB * C;

/// A deterministic random stream (splitmix64; Box–Muller normals).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// ᾱ_t of the linear β schedule (DDPM's, 1e-4 to 0.02).
fn alphas_cumprod() -> Vec<f64> {
    let mut acc = 1.0;
    (0..STEPS)
        .map(|i| {
            let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / (STEPS - 1) as f64;
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

/// Word bucket of each word of a prompt (lower case, split on anything not alphanumeric).
fn words(prompt: &str) -> Vec<usize> {
    prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            // FNV-1a: stable across platforms and runs.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in w.to_lowercase().bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            (h % VOCAB as u64) as usize
        })
        .collect()
}

/// Instance configuration: the JSON `create` receives. Unknown keys are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `random` (default) or a folder / `model.json` written by `save_state`.
    #[serde(default)]
    weights: Option<String>,
    /// Seed of the random initialisation.
    #[serde(default)]
    seed: u64,
    /// Only `cpu`.
    #[serde(default)]
    device: Option<String>,
}

/// What `save_state` writes (`model.json`): weights, AdamW moments and the step count.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    format: String,
    params: Params,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

const FORMAT: &str = "adt-plugin-template/1";

/// The template model instance.
pub struct Template {
    params: Params,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
    alphas_cumprod: Vec<f64>,
    /// Conditioning handles: the word buckets of each prompt (embedded at use, so a handle
    /// follows the weights as they train).
    conds: HashMap<u64, Vec<Vec<usize>>>,
    next_handle: u64,
    weights_hash: Option<String>,
}

fn shape_error(what: &str, got: &[usize], want: &str) -> PluginError {
    PluginError(format!("{what} has shape {got:?}, expected {want}"))
}

/// Check an image-shaped tensor `[B, 3, 16, 16]` and return B.
fn batch_of(t: TensorRef<'_>, what: &str) -> PluginResult<usize> {
    match t.shape {
        [b, c, h, w] if *b > 0 && *c == C && *h == SIZE && *w == SIZE => Ok(*b),
        s => Err(shape_error(what, s, &format!("[B, {C}, {SIZE}, {SIZE}]"))),
    }
}

fn read_state(path: &Path) -> PluginResult<State> {
    let file = if path.is_dir() {
        path.join("model.json")
    } else {
        path.to_path_buf()
    };
    let len = std::fs::metadata(&file)
        .map_err(|e| PluginError(format!("cannot read {}: {e}", file.display())))?
        .len();
    if len > MAX_STATE_BYTES {
        return Err(PluginError(format!(
            "{} is {len} bytes, more than a template checkpoint can be ({MAX_STATE_BYTES})",
            file.display()
        )));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| PluginError(format!("cannot read {}: {e}", file.display())))?;
    let st: State = serde_json::from_str(&text).map_err(|e| {
        PluginError(format!(
            "{} is not a template checkpoint: {e}",
            file.display()
        ))
    })?;
    if st.format != FORMAT || st.params.0.len() != COUNT {
        return Err(PluginError(format!(
            "{} is not a template checkpoint (format {:?}, {} parameters)",
            file.display(),
            st.format,
            st.params.0.len()
        )));
    }
    if st.params.0.iter().any(|v| !v.is_finite()) {
        return Err(PluginError(format!(
            "{} holds non-finite weights",
            file.display()
        )));
    }
    Ok(st)
}

impl Template {
    /// The mean of the prompt's word vectors (zero for the empty prompt).
    fn embedding(&self, ws: &[usize]) -> [f32; C] {
        let mut e = [0f32; C];
        for &w in ws {
            for (c, v) in e.iter_mut().enumerate() {
                *v += self.params.0[EMB + w * C + c] / ws.len() as f32;
            }
        }
        e
    }

    /// The prompts' words of a handle for a batch of `b` (one prompt broadcasts).
    fn words_of(&self, h: u64, b: usize) -> PluginResult<Vec<Vec<usize>>> {
        let w = self
            .conds
            .get(&h)
            .ok_or_else(|| PluginError(format!("unknown conditioning handle {h}")))?;
        match w.len() {
            1 => Ok(vec![w[0].clone(); b]),
            n if n == b => Ok(w.clone()),
            n => Err(PluginError(format!(
                "conditioning handle {h} holds {n} prompts for a batch of {b}"
            ))),
        }
    }

    /// The embeddings of a handle for a batch of `b`.
    fn cond(&self, h: u64, b: usize) -> PluginResult<Vec<[f32; C]>> {
        Ok(self
            .words_of(h, b)?
            .iter()
            .map(|w| self.embedding(w))
            .collect())
    }

    /// y = (A + τB)·x + b + e per pixel, for one example.
    fn forward_one(&self, x: &[f32], tau: f32, e: &[f32; C], y: &mut [f32]) {
        let p = &self.params.0;
        let hw = SIZE * SIZE;
        for c in 0..C {
            for k in 0..C {
                let w = p[A + c * C + k] + tau * p[B + c * C + k];
                for i in 0..hw {
                    y[c * hw + i] += w * x[k * hw + i];
                }
            }
            for i in 0..hw {
                y[c * hw + i] += p[BIAS + c] + e[c];
            }
        }
    }

    /// The (guided) output of a batch.
    fn forward(&self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        let b = batch_of(args.x, "x")?;
        if args.t.len() != b {
            return Err(PluginError(format!(
                "{} times for a batch of {b}",
                args.t.len()
            )));
        }
        let ec = self.cond(args.cond, b)?;
        let eu = match args.uncond {
            Some(u) => Some(self.cond(u, b)?),
            None => None,
        };
        let n = C * SIZE * SIZE;
        let mut out = vec![0f32; b * n];
        for i in 0..b {
            let tau = args.t[i] / STEPS as f32;
            // The model is linear in e: u + g(c − u) only changes the embedding term.
            let e = match &eu {
                Some(eu) => {
                    std::array::from_fn(|c| eu[i][c] + args.guidance * (ec[i][c] - eu[i][c]))
                }
                None => ec[i],
            };
            self.forward_one(
                &args.x.data[i * n..(i + 1) * n],
                tau,
                &e,
                &mut out[i * n..(i + 1) * n],
            );
        }
        Ok(HostTensor {
            shape: args.x.shape.to_vec(),
            data: out,
        })
    }

    /// Accumulate the parameter gradients of ⟨v, y⟩ for one branch (weight w: the branch's
    /// coefficient in the guided output) and return its input cotangent times w.
    fn backward_one(
        &mut self,
        x: &[f32],
        tau: f32,
        words_per_prompt: &[usize],
        v: &[f32],
        w: f32,
        gx: &mut [f32],
    ) {
        let hw = SIZE * SIZE;
        for c in 0..C {
            let vc = &v[c * hw..(c + 1) * hw];
            let sum_v: f32 = vc.iter().sum();
            for k in 0..C {
                let xk = &x[k * hw..(k + 1) * hw];
                let dot: f32 = vc.iter().zip(xk).map(|(a, b)| a * b).sum();
                self.grads[A + c * C + k] += w * dot;
                self.grads[B + c * C + k] += w * tau * dot;
                let m = self.params.0[A + c * C + k] + tau * self.params.0[B + c * C + k];
                for i in 0..hw {
                    gx[k * hw + i] += w * m * vc[i];
                }
            }
            self.grads[BIAS + c] += w * sum_v;
            for &word in words_per_prompt {
                self.grads[EMB + word * C + c] += w * sum_v / words_per_prompt.len() as f32;
            }
        }
    }
}

impl ModelPlugin for Template {
    fn create(config: &serde_json::Value) -> PluginResult<Self> {
        let cfg: Config = serde_json::from_value(config.clone())
            .map_err(|e| PluginError(format!("bad template config: {e}")))?;
        if let Some(d) = &cfg.device
            && d != "cpu"
        {
            return Err(PluginError(format!(
                "the template runs on `cpu` only, not `{d}`"
            )));
        }
        let mut t = Template {
            params: Params(vec![0.0; COUNT]),
            grads: vec![0.0; COUNT],
            m: vec![0.0; COUNT],
            v: vec![0.0; COUNT],
            step: 0,
            alphas_cumprod: alphas_cumprod(),
            conds: HashMap::new(),
            next_handle: 1,
            weights_hash: None,
        };
        match cfg.weights.as_deref() {
            None | Some("random") => {
                // A near-identity-free start: small random mixes and word vectors.
                let mut rng = Rng(cfg.seed ^ 0x7E57_0000);
                for (i, p) in t.params.0.iter_mut().enumerate() {
                    if !(BIAS..EMB).contains(&i) {
                        *p = 0.1 * rng.normal();
                    }
                }
            }
            Some(path) => {
                let st = read_state(Path::new(path))?;
                t.weights_hash = Some(format!("{:016x}", fnv(&st.params)));
                t.params = st.params;
            }
        }
        Ok(t)
    }

    fn describe(&self) -> PluginResult<ModelDescription> {
        Ok(ModelDescription {
            name: "template".into(),
            family: "template".into(),
            parameterization: Parameterization::Eps,
            schedule: NoiseSchedule::Discrete {
                alphas_cumprod: self.alphas_cumprod.clone(),
            },
            latent_shape: [C, SIZE, SIZE],
            image_shape: [C, SIZE, SIZE],
            parameters: COUNT as u64,
            trainable_parameters: COUNT as u64,
            default_guidance: 2.0,
            default_spacing: Spacing::Trailing,
            sampler_default_spacing: false,
            steps_offset: 0,
            set_alpha_to_one: Some(true),
            weights_hash: self.weights_hash.clone(),
            trains: true,
            extra: serde_json::Value::Null,
        })
    }

    fn encode_prompts(&mut self, prompts: &[String]) -> PluginResult<u64> {
        if prompts.is_empty() {
            return Err(PluginError::msg("no prompts"));
        }
        let h = self.next_handle;
        self.next_handle += 1;
        self.conds
            .insert(h, prompts.iter().map(|p| words(p)).collect());
        Ok(h)
    }

    fn release_cond(&mut self, handle: u64) -> PluginResult<()> {
        self.conds
            .remove(&handle)
            .map(drop)
            .ok_or_else(|| PluginError(format!("unknown conditioning handle {handle}")))
    }

    // A pixel-space model: latents are the images.
    fn encode_images(&mut self, images: TensorRef<'_>) -> PluginResult<HostTensor> {
        batch_of(images, "images")?;
        Ok(images.to_owned())
    }

    fn decode(&mut self, latents: TensorRef<'_>) -> PluginResult<HostTensor> {
        batch_of(latents, "latents")?;
        Ok(latents.to_owned())
    }

    fn decode_vjp(
        &mut self,
        latents: TensorRef<'_>,
        cotangent: TensorRef<'_>,
    ) -> PluginResult<HostTensor> {
        batch_of(latents, "latents")?;
        if cotangent.shape != latents.shape {
            return Err(shape_error(
                "cotangent",
                cotangent.shape,
                &format!("{:?}", latents.shape),
            ));
        }
        Ok(cotangent.to_owned())
    }

    fn denoise(&mut self, args: &DenoiseArgs<'_>) -> PluginResult<HostTensor> {
        self.forward(args)
    }

    fn denoise_vjp(
        &mut self,
        args: &DenoiseArgs<'_>,
        cotangent: TensorRef<'_>,
        want_input_cotangent: bool,
    ) -> PluginResult<Option<HostTensor>> {
        let b = batch_of(args.x, "x")?;
        if cotangent.shape != args.x.shape {
            return Err(shape_error(
                "cotangent",
                cotangent.shape,
                &format!("{:?}", args.x.shape),
            ));
        }
        if args.t.len() != b {
            return Err(PluginError(format!(
                "{} times for a batch of {b}",
                args.t.len()
            )));
        }
        // out = (1 − g)·y(uncond) + g·y(cond); without uncond, out = y(cond). A detached
        // unconditional branch contributes no gradient at all.
        let wc = self.words_of(args.cond, b)?;
        let branches: Vec<(Vec<Vec<usize>>, f32)> = match args.uncond {
            None => vec![(wc, 1.0)],
            Some(u) => {
                let wu = self.words_of(u, b)?;
                let mut v = vec![(wc, args.guidance)];
                if !args.detach_uncond {
                    v.push((wu, 1.0 - args.guidance));
                }
                v
            }
        };
        let n = C * SIZE * SIZE;
        let mut gx = vec![0f32; b * n];
        for (ws, w) in &branches {
            for i in 0..b {
                let tau = args.t[i] / STEPS as f32;
                let x = args.x.data[i * n..(i + 1) * n].to_vec();
                let v = &cotangent.data[i * n..(i + 1) * n];
                self.backward_one(&x, tau, &ws[i], v, *w, &mut gx[i * n..(i + 1) * n]);
            }
        }
        Ok(want_input_cotangent.then(|| HostTensor {
            shape: args.x.shape.to_vec(),
            data: gx,
        }))
    }

    fn diffusion_loss(
        &mut self,
        x0: TensorRef<'_>,
        cond: u64,
        seed: u64,
        weight: f64,
    ) -> PluginResult<f64> {
        let b = batch_of(x0, "x0")?;
        let ws = self.words_of(cond, b)?;
        let n = C * SIZE * SIZE;
        let mut rng = Rng(seed);
        let mut loss = 0f64;
        for (i, words) in ws.iter().enumerate() {
            // x_t = √ᾱ·x0 + √(1 − ᾱ)·ε at a uniform t; the target is ε.
            let t = (rng.next() % STEPS as u64) as usize;
            let a = self.alphas_cumprod[t];
            let eps: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let xt: Vec<f32> = x0.data[i * n..(i + 1) * n]
                .iter()
                .zip(&eps)
                .map(|(x, e)| (a.sqrt() as f32) * x + ((1.0 - a).sqrt() as f32) * e)
                .collect();
            let tau = t as f32 / STEPS as f32;
            let e = self.embedding(words);
            let mut y = vec![0f32; n];
            self.forward_one(&xt, tau, &e, &mut y);
            let total = (b * n) as f64;
            let mut dy = vec![0f32; n];
            for j in 0..n {
                let r = y[j] - eps[j];
                loss += (r as f64) * (r as f64) / total;
                dy[j] = (2.0 * r as f64 / total * weight) as f32;
            }
            if weight != 0.0 {
                let mut gx = vec![0f32; n];
                self.backward_one(&xt, tau, words, &dy, 1.0, &mut gx);
            }
        }
        Ok(loss)
    }

    fn zero_grad(&mut self) -> PluginResult<()> {
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        Ok(())
    }

    fn step(&mut self, c: &OptimConfig) -> PluginResult<StepStats> {
        let div = if c.grad_scale_divisor > 0.0 {
            c.grad_scale_divisor
        } else {
            1.0
        };
        let norm = self
            .grads
            .iter()
            .map(|g| (*g as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            / div;
        let stats = |skipped, clipped, step| StepStats {
            grad_norm: norm,
            clipped,
            skipped_non_finite: skipped,
            step,
            // This template keeps no moving average; the host stops when one is asked for.
            ema: false,
        };
        if !norm.is_finite() {
            self.zero_grad()?;
            return Ok(stats(true, false, self.step));
        }
        let mut scale = 1.0 / div;
        let clipped = c.clip_grad_norm.is_some_and(|max| norm > max);
        if let Some(max) = c.clip_grad_norm.filter(|_| clipped) {
            scale *= max / (norm + 1e-12);
        }
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for i in 0..COUNT {
            let g = self.grads[i] as f64 * scale;
            let m = c.beta1 * self.m[i] as f64 + (1.0 - c.beta1) * g;
            let v = c.beta2 * self.v[i] as f64 + (1.0 - c.beta2) * g * g;
            let upd = (m / bc1) / ((v / bc2).sqrt() + c.eps);
            let w = self.params.0[i] as f64 * (1.0 - c.lr * c.weight_decay) - c.lr * upd;
            self.params.0[i] = w as f32;
            self.m[i] = m as f32;
            self.v[i] = v as f32;
        }
        self.zero_grad()?;
        Ok(stats(false, clipped, self.step))
    }

    fn save_state(&self, dir: &Path) -> PluginResult<()> {
        let st = State {
            format: FORMAT.into(),
            params: self.params.clone(),
            m: self.m.clone(),
            v: self.v.clone(),
            step: self.step,
        };
        std::fs::create_dir_all(dir)?;
        // Written to a temporary file and renamed: a crash leaves the old state or the new.
        let tmp = dir.join(".model.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&st)?)?;
        std::fs::rename(&tmp, dir.join("model.json"))?;
        Ok(())
    }

    fn load_state(&mut self, dir: &Path) -> PluginResult<()> {
        let st = read_state(dir)?;
        if st.m.len() != COUNT || st.v.len() != COUNT {
            return Err(PluginError(format!(
                "{} holds no optimizer state for {COUNT} parameters",
                dir.display()
            )));
        }
        self.weights_hash = Some(format!("{:016x}", fnv(&st.params)));
        self.params = st.params;
        self.m = st.m;
        self.v = st.v;
        self.step = st.step;
        self.zero_grad()
    }
}

/// A content hash of the weights, for manifests.
fn fnv(p: &Params) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in &p.0 {
        for b in v.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

adt_plugin_api::export_model_plugin!(
    Template,
    name = "template",
    version = env!("CARGO_PKG_VERSION")
);
