//! Conformance checks of a model plugin: the contract of every call, measured through the
//! same ABI the harness uses, on any plugin library.
//!
//! Each check creates its own instance (from the same config), so one failure does not mask
//! another, and reports what it measured beside its tolerance:
//!
//! - `create`, `describe`: the instance is created and its description is coherent;
//! - `shapes`: encode → denoise → decode keep the documented shapes, outputs are finite;
//! - `broadcast`: one prompt gives what the same prompt repeated per example gives;
//! - `determinism`: the same call twice gives the same bits; `diffusion_loss` depends on its
//!   seed and only on it;
//! - `guidance`: a guided evaluation is `u + g·(c − u)` of the two unguided ones;
//! - `bad inputs`: wrong shapes and unknown handles are errors (never a success or a panic);
//! - `decode_vjp`, `denoise_vjp (input)`: ⟨v, J·d⟩ against central finite differences on random
//!   directions (in f64 when the plugin's `create` accepts `dtype: "f64"`);
//! - `denoise_vjp (parameters)`, `diffusion_loss (parameters)`: the accumulated parameter
//!   gradient g checked through the optimizer: with Adam's β1 = β2 = 0 and an ε far above every
//!   |gᵢ| a step is θ − α·g, so the probe must move by −α‖g‖² to first order (‖g‖ is the step's
//!   reported gradient norm);
//! - `step`: one default AdamW step lowers a quadratic probe;
//! - `save/load`: a saved and reloaded instance gives the same bits.
//!
//! An inference-only plugin (`trains: false`) gets the training checks skipped and one check
//! that its training calls answer errors. A panic escaping a call fails the check it happened
//! in (the SDK contains it at the boundary; the detail says PANIC).

use std::path::PathBuf;

use adt_plugin_api::{HostTensor, ModelDescription, NoiseSchedule, OptimConfig};
use serde::Serialize;

use crate::{Cond, Denoise, Error, Model, PluginInfo};

/// What to check with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config each instance is created with (the JSON `create` receives).
    pub config: serde_json::Value,
    /// Examples per batch.
    pub batch: usize,
    /// Random directions per finite-difference check.
    pub directions: usize,
    /// Seed of the random inputs and directions.
    pub seed: u64,
    /// Largest relative error a gradient check accepts.
    pub grad_tol: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: serde_json::json!({}),
            batch: 2,
            directions: 3,
            seed: 0,
            grad_tol: 1e-2,
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The contract holds.
    Pass,
    /// The contract is broken (see the detail).
    Fail,
    /// Not applicable (e.g. a training check of an inference-only plugin).
    Skip,
}

/// One row of the conformance table.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// The measured error, where the check measures one.
    pub error: Option<f64>,
    /// The largest error accepted.
    pub tolerance: Option<f64>,
    /// What was measured or what went wrong.
    pub detail: String,
}

type R<T> = std::result::Result<T, String>;

fn call<T>(r: crate::Result<T>) -> R<T> {
    r.map_err(|e| match &e {
        Error::Panicked { .. } => format!("PANIC (contained at the boundary): {e}"),
        _ => e.to_string(),
    })
}

/// A deterministic stream of standard normals (splitmix64 + Box–Muller).
struct Normal(u64);

impl Normal {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn sample(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn tensor(&mut self, shape: &[usize], scale: f32) -> HostTensor {
        let n = shape.iter().product();
        HostTensor {
            shape: shape.to_vec(),
            data: (0..n).map(|_| self.sample() * scale).collect(),
        }
    }
}

fn dot(a: &HostTensor, b: &HostTensor) -> f64 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum()
}

fn norm(a: &HostTensor) -> f64 {
    dot(a, a).sqrt()
}

fn axpy(x: &HostTensor, a: f32, d: &HostTensor) -> HostTensor {
    HostTensor {
        shape: x.shape.clone(),
        data: x.data.iter().zip(&d.data).map(|(x, d)| x + a * d).collect(),
    }
}

fn max_rel(a: &HostTensor, b: &HostTensor) -> f64 {
    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12) as f64;
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
        / scale
}

fn rel_err(measured: f64, predicted: f64) -> f64 {
    (measured - predicted).abs() / measured.abs().max(predicted.abs()).max(1e-30)
}

/// The fixed inputs every check uses: latents, model times, prompts, images.
struct Inputs {
    desc: ModelDescription,
    x: HostTensor,
    t: Vec<f32>,
    prompts: Vec<String>,
    images: HostTensor,
    rng: Normal,
}

impl Inputs {
    fn new(desc: ModelDescription, o: &Options) -> Inputs {
        let mut rng = Normal(o.seed ^ 0xC0FF_EE00);
        let b = o.batch.max(1);
        let [c, h, w] = desc.latent_shape;
        let x = rng.tensor(&[b, c, h, w], 1.0);
        let n = match &desc.schedule {
            NoiseSchedule::Discrete { alphas_cumprod } => alphas_cumprod.len(),
            NoiseSchedule::Flow {
                num_train_timesteps,
                ..
            } => *num_train_timesteps,
        } as f32;
        // Mid-schedule times, distinct per example (discrete schedules take integer indices).
        let t = (0..b)
            .map(|i| (n * (0.35 + 0.3 * i as f32 / b as f32)).floor())
            .collect();
        let prompts = (0..b)
            .map(|i| ["a red circle", "a blue square", "a green triangle"][i % 3].to_string())
            .collect();
        let [_, ih, iw] = desc.image_shape;
        let mut images = rng.tensor(&[b, 3, ih, iw], 0.5);
        for v in &mut images.data {
            *v = v.clamp(-1.0, 1.0);
        }
        Inputs {
            desc,
            x,
            t,
            prompts,
            images,
            rng,
        }
    }
}

fn pass(name: &'static str, error: Option<f64>, tol: Option<f64>, detail: String) -> Check {
    let outcome = match (error, tol) {
        (Some(e), Some(t)) if e.is_nan() || e > t => Outcome::Fail,
        _ => Outcome::Pass,
    };
    Check {
        name,
        outcome,
        error,
        tolerance: tol,
        detail,
    }
}

fn fail(name: &'static str, detail: String) -> Check {
    Check {
        name,
        outcome: Outcome::Fail,
        error: None,
        tolerance: None,
        detail,
    }
}

fn skip(name: &'static str, detail: &str) -> Check {
    Check {
        name,
        outcome: Outcome::Skip,
        error: None,
        tolerance: None,
        detail: detail.into(),
    }
}

/// Run every check of `info` (a model plugin) created with `opts.config`.
pub fn run(info: &PluginInfo, opts: &Options) -> Vec<Check> {
    let mut out = Vec::new();
    let open = || call(Model::create(info, &opts.config));
    let desc = match open().and_then(|m| call(m.describe())) {
        Ok(d) => {
            out.push(pass("create", None, None, format!("`{}` created", d.name)));
            d
        }
        Err(e) => {
            out.push(fail("create", e));
            return out;
        }
    };
    out.push(match describe_problems(&desc) {
        p if p.is_empty() => pass(
            "describe",
            None,
            None,
            format!(
                "latents {:?}, images {:?}, {} parameters ({} trained), trains: {}",
                desc.latent_shape,
                desc.image_shape,
                desc.parameters,
                desc.trainable_parameters,
                desc.trains
            ),
        ),
        p => fail("describe", p.join("; ")),
    });
    let trains = desc.trains;
    let mut inp = Inputs::new(desc, opts);
    type Body = fn(&mut Model, &mut Inputs, &Options, &dyn Fn() -> R<Model>) -> R<Check>;
    let sampling: [(&'static str, Body); 5] = [
        ("shapes", shapes),
        ("broadcast", broadcast),
        ("determinism", determinism),
        ("guidance", guidance),
        ("bad inputs", bad_inputs),
    ];
    let training: [(&'static str, Body); 6] = [
        ("decode_vjp", decode_vjp),
        ("denoise_vjp (input)", denoise_vjp_input),
        ("denoise_vjp (parameters)", denoise_vjp_params),
        ("diffusion_loss (parameters)", diffusion_loss_params),
        ("step", step_lowers_probe),
        ("save/load", save_load),
    ];
    // Gradient checks run in f64 where the plugin offers it (`dtype: "f64"` accepted by
    // `create`), else in the config's dtype.
    let f64_config = match opts.config.as_object() {
        Some(o) if !o.contains_key("dtype") => {
            let mut c = opts.config.clone();
            c["dtype"] = "f64".into();
            Model::create(info, &c).is_ok().then_some(c)
        }
        _ => None,
    };
    let precision = if f64_config.is_some() {
        "f64"
    } else {
        "the plugin's dtype"
    };
    let grad_config = f64_config.unwrap_or_else(|| opts.config.clone());
    let open_grad = || call(Model::create(info, &grad_config));
    let mut each =
        |name: &'static str, body: Body, open: &dyn Fn() -> R<Model>, out: &mut Vec<Check>| {
            let r = open().and_then(|mut m| body(&mut m, &mut inp, opts, open));
            out.push(r.unwrap_or_else(|e| fail(name, e)));
        };
    for (name, body) in sampling {
        each(name, body, &open, &mut out);
    }
    if trains {
        for (name, body) in training {
            each(name, body, &open_grad, &mut out);
            if let Some(c) = out.last_mut()
                && c.error.is_some()
            {
                c.detail.push_str(&format!(" (in {precision})"));
            }
        }
    } else {
        for (name, _) in training {
            out.push(skip(name, "inference-only plugin (trains: false)"));
        }
        each("training calls refused", training_refused, &open, &mut out);
    }
    out
}

fn describe_problems(d: &ModelDescription) -> Vec<String> {
    let mut p = Vec::new();
    if d.image_shape[0] != 3 || d.image_shape.contains(&0) {
        p.push(format!("image_shape {:?} is not [3, H, W]", d.image_shape));
    }
    if d.latent_shape.contains(&0) {
        p.push(format!("latent_shape {:?} has a zero", d.latent_shape));
    }
    match &d.schedule {
        NoiseSchedule::Discrete { alphas_cumprod: a } => {
            if a.is_empty() {
                p.push("alphas_cumprod is empty".into());
            }
            if a.iter().any(|v| !(*v >= 0.0 && *v <= 1.0)) {
                p.push("alphas_cumprod has values outside [0, 1]".into());
            }
            if a.windows(2).any(|w| w[1] > w[0]) {
                p.push("alphas_cumprod increases".into());
            }
        }
        NoiseSchedule::Flow {
            num_train_timesteps,
            shift,
        } => {
            if *num_train_timesteps == 0 || shift.is_nan() || *shift <= 0.0 {
                p.push(format!(
                    "flow schedule needs timesteps > 0 and shift > 0 (got {num_train_timesteps}, {shift})"
                ));
            }
        }
    }
    if !(d.default_guidance.is_finite() && d.default_guidance >= 0.0) {
        p.push(format!(
            "default_guidance {} is not ≥ 0",
            d.default_guidance
        ));
    }
    if d.trainable_parameters > d.parameters {
        p.push(format!(
            "trainable_parameters {} exceed parameters {}",
            d.trainable_parameters, d.parameters
        ));
    }
    p
}

fn finite(t: &HostTensor, what: &str) -> R<()> {
    match t.data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!("{what} has a non-finite value at {i}")),
    }
}

fn den<'a>(inp: &'a Inputs, x: &'a HostTensor, c: Cond, u: Option<Cond>, g: f32) -> Denoise<'a> {
    Denoise {
        x,
        t: &inp.t,
        cond: c,
        uncond: u,
        guidance: g,
        detach_uncond: false,
    }
}

fn shapes(m: &mut Model, inp: &mut Inputs, _: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let b = inp.x.shape[0];
    let [_, ih, iw] = inp.desc.image_shape;
    let c = call(m.encode_prompts(&inp.prompts))?;
    let y = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    if y.shape != inp.x.shape {
        return Err(format!(
            "denoise of {:?} returned {:?}",
            inp.x.shape, y.shape
        ));
    }
    finite(&y, "denoise")?;
    let img = call(m.decode(&inp.x))?;
    if img.shape != [b, 3, ih, iw] {
        return Err(format!(
            "decode of {:?} returned {:?}",
            inp.x.shape, img.shape
        ));
    }
    finite(&img, "decode")?;
    let lat = call(m.encode_images(&inp.images))?;
    if lat.shape != inp.x.shape {
        return Err(format!(
            "encode_images of {:?} returned {:?}, expected {:?}",
            inp.images.shape, lat.shape, inp.x.shape
        ));
    }
    finite(&lat, "encode_images")?;
    call(m.release(c))?;
    Ok(pass(
        "shapes",
        None,
        None,
        format!(
            "denoise {:?}, decode {:?}, encode_images {:?}",
            y.shape, img.shape, lat.shape
        ),
    ))
}

fn broadcast(m: &mut Model, inp: &mut Inputs, _: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let b = inp.x.shape[0];
    let one = call(m.encode_prompts(&inp.prompts[..1]))?;
    let many = call(m.encode_prompts(&vec![inp.prompts[0].clone(); b]))?;
    let a = call(m.denoise(&den(inp, &inp.x, one, None, 1.0)))?;
    let r = call(m.denoise(&den(inp, &inp.x, many, None, 1.0)))?;
    let e = max_rel(&a, &r);
    Ok(pass(
        "broadcast",
        Some(e),
        Some(1e-5),
        format!("one prompt vs {b} copies: max |Δ| / max |y|"),
    ))
}

fn determinism(m: &mut Model, inp: &mut Inputs, _: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let c = call(m.encode_prompts(&inp.prompts))?;
    let a = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    let b = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    if a.data != b.data {
        return Ok(fail(
            "determinism",
            format!(
                "denoise twice differs by {:.3e} (relative)",
                max_rel(&a, &b)
            ),
        ));
    }
    let mut detail = "denoise bit-identical".to_string();
    if inp.desc.trains {
        let x0 = call(m.encode_images(&inp.images))?;
        let l1 = call(m.diffusion_loss(&x0, c, 11, 0.0))?;
        let l2 = call(m.diffusion_loss(&x0, c, 11, 0.0))?;
        let l3 = call(m.diffusion_loss(&x0, c, 12, 0.0))?;
        if l1 != l2 || !l1.is_finite() {
            return Ok(fail(
                "determinism",
                format!("diffusion_loss with one seed gave {l1} then {l2}"),
            ));
        }
        if l1 == l3 {
            return Ok(fail(
                "determinism",
                format!("diffusion_loss ignores its seed ({l1} for seeds 11 and 12)"),
            ));
        }
        detail.push_str(&format!(
            "; diffusion_loss {l1:.6} twice for seed 11, {l3:.6} for seed 12"
        ));
    }
    Ok(pass("determinism", None, None, detail))
}

fn guidance(m: &mut Model, inp: &mut Inputs, _: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let g = 3.0f32;
    let c = call(m.encode_prompts(&inp.prompts))?;
    let u = call(m.encode_prompts(&[String::new()]))?;
    let yc = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    let yu = call(m.denoise(&den(inp, &inp.x, u, None, 1.0)))?;
    let yg = call(m.denoise(&den(inp, &inp.x, c, Some(u), g)))?;
    let want = HostTensor {
        shape: yc.shape.clone(),
        data: yu
            .data
            .iter()
            .zip(&yc.data)
            .map(|(u, c)| u + g * (c - u))
            .collect(),
    };
    Ok(pass(
        "guidance",
        Some(max_rel(&yg, &want)),
        Some(1e-4),
        format!("guided (g = {g}) vs u + g·(c − u): max |Δ| / max |y|"),
    ))
}

fn bad_inputs(m: &mut Model, inp: &mut Inputs, _: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let c = call(m.encode_prompts(&inp.prompts))?;
    let mut wrong_c = inp.x.shape.clone();
    wrong_c[1] += 1;
    let bad_x = HostTensor::zeros(&wrong_c);
    let short_t = &inp.t[..inp.t.len() - 1];
    let mut problems = Vec::new();
    let mut refused = 0;
    let mut expect = |what: &str, r: crate::Result<()>| match r {
        Ok(()) => problems.push(format!("{what}: accepted")),
        Err(e @ Error::Panicked { .. }) => problems.push(format!("{what}: PANIC {e}")),
        Err(_) => refused += 1,
    };
    expect(
        "denoise with a wrong channel count",
        m.denoise(&den(inp, &bad_x, c, None, 1.0)).map(drop),
    );
    expect(
        "denoise with too few times",
        m.denoise(&Denoise {
            t: short_t,
            ..den(inp, &inp.x, c, None, 1.0)
        })
        .map(drop),
    );
    expect(
        "denoise with an unknown handle",
        m.denoise(&den(inp, &inp.x, Cond(0xDEAD_BEEF), None, 1.0))
            .map(drop),
    );
    expect("release of an unknown handle", m.release(Cond(0xDEAD_BEEF)));
    expect("decode of a wrong shape", m.decode(&bad_x).map(drop));
    expect(
        "encode_images of a wrong shape",
        m.encode_images(&HostTensor::zeros(&[1, 2, 3])).map(drop),
    );
    if problems.is_empty() {
        Ok(pass(
            "bad inputs",
            None,
            None,
            format!("{refused} bad calls refused with errors"),
        ))
    } else {
        Ok(fail("bad inputs", problems.join("; ")))
    }
}

/// ⟨v, J·d⟩ by central differences, at several step sizes; the smallest disagreement with
/// the analytic value is kept (step-size choice is not the plugin's fault).
fn central_fd(
    f: &mut dyn FnMut(&HostTensor) -> R<HostTensor>,
    x: &HostTensor,
    v: &HostTensor,
    d: &HostTensor,
    analytic: f64,
) -> R<(f64, f64)> {
    let scale = (norm(x) / norm(d).max(1e-30)).max(1e-3);
    let mut best = (f64::INFINITY, f64::NAN);
    for h in [3e-2, 1e-2, 3e-3, 1e-3, 3e-4] {
        let eps = (h * scale) as f32;
        let yp = f(&axpy(x, eps, d))?;
        let ym = f(&axpy(x, -eps, d))?;
        let fd = (dot(v, &yp) - dot(v, &ym)) / (2.0 * eps as f64);
        let e = rel_err(fd, analytic);
        if e < best.0 {
            best = (e, fd);
        }
    }
    Ok(best)
}

fn decode_vjp(m: &mut Model, inp: &mut Inputs, o: &Options, _: &dyn Fn() -> R<Model>) -> R<Check> {
    let y = call(m.decode(&inp.x))?;
    let mut worst = 0f64;
    for _ in 0..o.directions {
        let v = inp.rng.tensor(&y.shape, 1.0);
        let d = inp.rng.tensor(&inp.x.shape, 1.0);
        let g = call(m.decode_vjp(&inp.x, &v))?;
        if g.shape != inp.x.shape {
            return Err(format!(
                "decode_vjp returned {:?}, expected {:?}",
                g.shape, inp.x.shape
            ));
        }
        let (e, _) = central_fd(&mut |x| call(m.decode(x)), &inp.x, &v, &d, dot(&g, &d))?;
        worst = worst.max(e);
    }
    Ok(pass(
        "decode_vjp",
        Some(worst),
        Some(o.grad_tol),
        format!(
            "⟨v, J·d⟩ vs central differences, worst of {} directions",
            o.directions
        ),
    ))
}

fn denoise_vjp_input(
    m: &mut Model,
    inp: &mut Inputs,
    o: &Options,
    _: &dyn Fn() -> R<Model>,
) -> R<Check> {
    let c = call(m.encode_prompts(&inp.prompts))?;
    let u = call(m.encode_prompts(&[String::new()]))?;
    let g = 2.0;
    let mut worst = 0f64;
    for _ in 0..o.directions {
        let v = inp.rng.tensor(&inp.x.shape, 1.0);
        let d = inp.rng.tensor(&inp.x.shape, 1.0);
        call(m.zero_grad())?;
        let gx = call(m.denoise_vjp(&den(inp, &inp.x, c, Some(u), g), &v, true))?
            .ok_or("denoise_vjp returned no input cotangent")?;
        if gx.shape != inp.x.shape {
            return Err(format!(
                "input cotangent {:?}, expected {:?}",
                gx.shape, inp.x.shape
            ));
        }
        let t = inp.t.clone();
        let (e, _) = central_fd(
            &mut |x| {
                call(m.denoise(&Denoise {
                    x,
                    t: &t,
                    cond: c,
                    uncond: Some(u),
                    guidance: g,
                    detach_uncond: false,
                }))
            },
            &inp.x,
            &v,
            &d,
            dot(&gx, &d),
        )?;
        worst = worst.max(e);
    }
    call(m.zero_grad())?;
    Ok(pass(
        "denoise_vjp (input)",
        Some(worst),
        Some(o.grad_tol),
        format!(
            "guided (g = {g}): ⟨v, J_x·d⟩ vs central differences, worst of {} directions",
            o.directions
        ),
    ))
}

/// The accumulated parameter gradient, checked through a step that is θ − α·g: Adam with
/// β1 = β2 = 0 and ε = 1e6·‖g‖ (so ε ≫ |gᵢ|) moves by −lr·g/(|g| + ε) ≈ −(lr/ε)·g. The probe
/// P must then change by −α‖g‖² to first order. `accumulate` adds the gradient of P;
/// `probe` evaluates P without gradient.
fn through_step(
    name: &'static str,
    open: &dyn Fn() -> R<Model>,
    o: &Options,
    accumulate: &dyn Fn(&mut Model) -> R<()>,
    probe: &dyn Fn(&mut Model) -> R<f64>,
) -> R<Check> {
    let sgd = |lr: f64, eps: f64| OptimConfig {
        lr,
        beta1: 0.0,
        beta2: 0.0,
        eps,
        weight_decay: 0.0,
        clip_grad_norm: None,
        grad_scale_divisor: 1.0,
        ema_decay: None,
    };
    // The gradient norm, read from a step that does not move (lr 0).
    let mut m = open()?;
    let p0 = probe(&mut m)?;
    call(m.zero_grad())?;
    accumulate(&mut m)?;
    let gn = call(m.step(&sgd(0.0, 1.0)))?.grad_norm;
    if !(gn.is_finite() && gn > 0.0) {
        return Ok(fail(
            name,
            format!("gradient norm {gn} (must be finite and > 0)"),
        ));
    }
    if call(m.describe())?.trainable_parameters == 0 {
        return Ok(fail(name, "no trainable parameters".into()));
    }
    let eps = 1e6 * gn;
    let mut best = (f64::INFINITY, 0.0, 0.0);
    // Step sizes giving a first-order change of 10 % down to 0.01 % of |P| (or of 1).
    for r in [1e-1, 1e-2, 1e-3, 1e-4] {
        let alpha = r * p0.abs().max(1.0) / (gn * gn);
        let mut m = open()?;
        call(m.zero_grad())?;
        accumulate(&mut m)?;
        call(m.step(&sgd(alpha * eps, eps)))?;
        let p1 = probe(&mut m)?;
        let (measured, predicted) = (p1 - p0, -alpha * gn * gn);
        let e = rel_err(measured, predicted);
        if e < best.0 {
            best = (e, measured, predicted);
        }
    }
    Ok(pass(
        name,
        Some(best.0),
        Some(o.grad_tol),
        format!(
            "‖g‖ = {gn:.4e}; a step θ − α·g moved the probe by {:.4e}, first order predicts {:.4e}",
            best.1, best.2
        ),
    ))
}

fn denoise_vjp_params(
    m: &mut Model,
    inp: &mut Inputs,
    o: &Options,
    open: &dyn Fn() -> R<Model>,
) -> R<Check> {
    let _ = m;
    let v = inp.rng.tensor(&inp.x.shape, 1.0);
    let (x, t, prompts) = (inp.x.clone(), inp.t.clone(), inp.prompts.clone());
    let g = 2.0;
    let eval = |m: &mut Model, grad: bool| -> R<f64> {
        let c = call(m.encode_prompts(&prompts))?;
        let u = call(m.encode_prompts(&[String::new()]))?;
        let d = Denoise {
            x: &x,
            t: &t,
            cond: c,
            uncond: Some(u),
            guidance: g,
            detach_uncond: false,
        };
        let p = if grad {
            call(m.denoise_vjp(&d, &v, false))?;
            0.0
        } else {
            dot(&v, &call(m.denoise(&d))?)
        };
        call(m.release(c))?;
        call(m.release(u))?;
        Ok(p)
    };
    through_step(
        "denoise_vjp (parameters)",
        open,
        o,
        &|m| eval(m, true).map(drop),
        &|m| eval(m, false),
    )
}

fn diffusion_loss_params(
    m: &mut Model,
    inp: &mut Inputs,
    o: &Options,
    open: &dyn Fn() -> R<Model>,
) -> R<Check> {
    let x0 = call(m.encode_images(&inp.images))?;
    let prompts = inp.prompts.clone();
    let eval = |m: &mut Model, weight: f64| -> R<f64> {
        let c = call(m.encode_prompts(&prompts))?;
        let l = call(m.diffusion_loss(&x0, c, 5, weight))?;
        call(m.release(c))?;
        Ok(l)
    };
    through_step(
        "diffusion_loss (parameters)",
        open,
        o,
        &|m| eval(m, 1.0).map(drop),
        &|m| eval(m, 0.0),
    )
}

fn step_lowers_probe(
    m: &mut Model,
    inp: &mut Inputs,
    _: &Options,
    _: &dyn Fn() -> R<Model>,
) -> R<Check> {
    let c = call(m.encode_prompts(&inp.prompts))?;
    let target = inp.rng.tensor(&inp.x.shape, 1.0);
    let probe = |m: &mut Model| -> R<(f64, HostTensor)> {
        let y = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
        let r = axpy(&y, -1.0, &target);
        Ok((0.5 * dot(&r, &r), r))
    };
    let (q0, r) = probe(m)?;
    call(m.zero_grad())?;
    call(m.denoise_vjp(&den(inp, &inp.x, c, None, 1.0), &r, false))?;
    let stats = call(m.step(&OptimConfig {
        clip_grad_norm: Some(1.0),
        ..OptimConfig::adamw(1e-4)
    }))?;
    let (q1, _) = probe(m)?;
    if stats.skipped_non_finite || q1.is_nan() || q1 >= q0 {
        return Ok(fail(
            "step",
            format!(
                "an AdamW step (lr 1e-4) took the probe ½‖f − y‖² from {q0:.6e} to {q1:.6e}{}",
                if stats.skipped_non_finite {
                    " (skipped as non-finite)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(pass(
        "step",
        None,
        None,
        format!("an AdamW step (lr 1e-4) took the probe ½‖f − y‖² from {q0:.6e} to {q1:.6e}"),
    ))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> R<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p =
            std::env::temp_dir().join(format!("adt-conformance-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn save_load(
    m: &mut Model,
    inp: &mut Inputs,
    _: &Options,
    open: &dyn Fn() -> R<Model>,
) -> R<Check> {
    // Move away from the initial weights first, so a load that does nothing is caught.
    let c = call(m.encode_prompts(&inp.prompts))?;
    let v = inp.rng.tensor(&inp.x.shape, 1.0);
    let before = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    call(m.zero_grad())?;
    call(m.denoise_vjp(&den(inp, &inp.x, c, None, 1.0), &v, false))?;
    call(m.step(&OptimConfig::adamw(1e-3)))?;
    let after = call(m.denoise(&den(inp, &inp.x, c, None, 1.0)))?;
    if after.data == before.data {
        return Ok(fail("save/load", "a step did not change the output".into()));
    }
    let dir = TempDir::new()?;
    call(m.save_state(&dir.0))?;
    let mut back = open()?;
    call(back.load_state(&dir.0))?;
    let c2 = call(back.encode_prompts(&inp.prompts))?;
    let again = call(back.denoise(&den(inp, &inp.x, c2, None, 1.0)))?;
    if again.data != after.data {
        return Ok(fail(
            "save/load",
            format!(
                "the reloaded instance differs by {:.3e} (relative)",
                max_rel(&again, &after)
            ),
        ));
    }
    Ok(pass(
        "save/load",
        None,
        None,
        "after a step, save_state → new instance → load_state gives the same bits".into(),
    ))
}

fn training_refused(
    m: &mut Model,
    inp: &mut Inputs,
    _: &Options,
    _: &dyn Fn() -> R<Model>,
) -> R<Check> {
    let c = call(m.encode_prompts(&inp.prompts))?;
    let mut problems = Vec::new();
    let mut check = |what: &str, r: crate::Result<()>| match r {
        Ok(()) => problems.push(format!("{what} succeeded")),
        Err(e @ Error::Panicked { .. }) => problems.push(format!("{what}: PANIC {e}")),
        Err(_) => {}
    };
    check("zero_grad", m.zero_grad());
    check("step", m.step(&OptimConfig::adamw(1e-3)).map(drop));
    check(
        "denoise_vjp",
        m.denoise_vjp(&den(inp, &inp.x, c, None, 1.0), &inp.x, true)
            .map(drop),
    );
    check(
        "diffusion_loss",
        m.diffusion_loss(&inp.x, c, 0, 1.0).map(drop),
    );
    if problems.is_empty() {
        Ok(pass(
            "training calls refused",
            None,
            None,
            "every training call answers an error".into(),
        ))
    } else {
        Ok(fail("training calls refused", problems.join("; ")))
    }
}

/// The table as text: one row per check, the failures' details below it.
pub fn table(checks: &[Check]) -> String {
    let mut s = format!(
        "{:<30} {:<6} {:>11} {:>11}  DETAIL\n",
        "CHECK", "RESULT", "ERROR", "TOLERANCE"
    );
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3e}"));
    for c in checks {
        let r = match c.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        };
        s.push_str(&format!(
            "{:<30} {:<6} {:>11} {:>11}  {}\n",
            c.name,
            r,
            num(c.error),
            num(c.tolerance),
            c.detail
        ));
    }
    s
}
