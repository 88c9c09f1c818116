//! The built-in sampler plugin: `ddim`, `ddpm`, `euler`, `euler-a`, `heun`, `dpm++2m`, `unipc` and
//! `flow-euler`, each written as an explicit linear scheme (a [`Plan`]): for every model
//! evaluation its time and input, for every step the next state as a linear combination of
//! states, model outputs and fresh noise. Timesteps, sigmas and update rules follow the
//! diffusers schedulers they are named after (`mirrors` in [`SamplerInfo`]); the tests check
//! them against reference values diffusers produced.
//!
//! States live in the model's own noisy space, x = α·x0 + σ·ε (variance-preserving for
//! discrete schedules, α = 1 − s, σ = s for flow matching); the model input of every
//! evaluation is that state itself. Euler-family samplers, which diffusers writes in the
//! k-diffusion space x/α with `scale_model_input`, are converted exactly.
//!
//! Must not depend on any adt-bench crate other than `adt-plugin-api`.

#![forbid(unsafe_code)]

pub mod lin;
pub mod schedule;

use adt_plugin_api::{
    NoiseSchedule, Parameterization, Plan, PlanEval, PlanRequest, PlanStep, PluginError,
    PluginResult, SamplerInfo, SamplerPlugin, Spacing, Src,
};

use lin::Lin;

adt_plugin_api::declare_sampler_plugin!(pub fn header, Builtin, name = "builtin-samplers", version = env!("CARGO_PKG_VERSION"));

/// The built-in sampler family.
pub struct Builtin;

/// Which schedules a sampler plans for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    /// Variance-preserving discrete schedules (`alphas_cumprod`).
    Discrete,
    /// Flow matching (`num_train_timesteps`, `shift`).
    Flow,
}

/// How a sampler builds its plan.
#[derive(Clone, Copy)]
enum Build {
    /// DDIM (`false`) or DDPM (`true`).
    DdimLike(bool),
    EulerFamily,
    DpmPP2M,
    UniPC,
    FlowEuler,
}

/// One row of the sampler table: what `list` reports and how `plan` builds it. Both read this
/// one table, so every listed sampler can be planned and every plannable one is listed.
struct Row {
    name: &'static str,
    order: u32,
    stochastic: bool,
    evals: u32,
    on: On,
    mirrors: &'static str,
    description: &'static str,
    build: Build,
}

#[rustfmt::skip]
const SAMPLERS: &[Row] = &[
    Row { name: "ddim", order: 1, stochastic: false, evals: 1, on: On::Discrete,
          mirrors: "DDIMScheduler",
          description: "DDIM (η = 0 deterministic; η > 0 adds noise)",
          build: Build::DdimLike(false) },
    Row { name: "ddpm", order: 1, stochastic: true, evals: 1, on: On::Discrete,
          mirrors: "DDPMScheduler",
          description: "ancestral DDPM posterior sampling (fixed_small variance)",
          build: Build::DdimLike(true) },
    Row { name: "euler", order: 1, stochastic: false, evals: 1, on: On::Discrete,
          mirrors: "EulerDiscreteScheduler",
          description: "Euler on the probability-flow ODE (k-diffusion)",
          build: Build::EulerFamily },
    Row { name: "euler-a", order: 1, stochastic: true, evals: 1, on: On::Discrete,
          mirrors: "EulerAncestralDiscreteScheduler",
          description: "Euler ancestral",
          build: Build::EulerFamily },
    Row { name: "heun", order: 2, stochastic: false, evals: 2, on: On::Discrete,
          mirrors: "HeunDiscreteScheduler",
          description: "Heun's 2nd-order method (last step Euler)",
          build: Build::EulerFamily },
    Row { name: "dpm++2m", order: 2, stochastic: false, evals: 1, on: On::Discrete,
          mirrors: "DPMSolverMultistepScheduler",
          description: "DPM-Solver++(2M), first order at the first and last step",
          build: Build::DpmPP2M },
    Row { name: "unipc", order: 2, stochastic: false, evals: 1, on: On::Discrete,
          mirrors: "UniPCMultistepScheduler",
          description: "UniPC (bh2 predictor-corrector), first order at the first and last step",
          build: Build::UniPC },
    Row { name: "flow-euler", order: 1, stochastic: false, evals: 1, on: On::Flow,
          mirrors: "FlowMatchEulerDiscreteScheduler",
          description: "Euler for rectified-flow models (SD3)",
          build: Build::FlowEuler },
];

impl SamplerPlugin for Builtin {
    fn list() -> Vec<SamplerInfo> {
        SAMPLERS
            .iter()
            .map(|r| SamplerInfo {
                name: r.name.into(),
                order: r.order,
                stochastic: r.stochastic,
                evals_per_step: r.evals,
                schedules: vec![on_name(r.on).into()],
                mirrors: r.mirrors.into(),
                description: r.description.into(),
            })
            .collect()
    }

    fn plan(req: &PlanRequest) -> PluginResult<Plan> {
        let row = SAMPLERS
            .iter()
            .find(|r| r.name == req.sampler)
            .ok_or_else(|| unknown(&req.sampler))?;
        if req.steps == 0 {
            return Err(PluginError::msg("steps must be at least 1"));
        }
        if req.start_index >= req.steps {
            return Err(PluginError(format!(
                "start index {} is past the last step (a {}-step plan has indices 0..={})",
                req.start_index,
                req.steps,
                req.steps - 1
            )));
        }
        match (&req.schedule, row.build) {
            (NoiseSchedule::Discrete { alphas_cumprod }, build) if row.on == On::Discrete => {
                if alphas_cumprod.len() < req.steps {
                    return Err(PluginError::msg(
                        "schedule shorter than the number of steps",
                    ));
                }
                if alphas_cumprod.iter().any(|a| !(*a > 0.0 && *a <= 1.0)) {
                    return Err(PluginError::msg("alphas_cumprod must lie in (0, 1]"));
                }
                let ac = alphas_cumprod;
                Ok(match build {
                    Build::DdimLike(ddpm) => ddim_like(req, ac, ddpm),
                    Build::EulerFamily => euler_family(req, ac),
                    Build::DpmPP2M => dpmpp_2m(req, ac),
                    Build::UniPC => unipc(req, ac),
                    Build::FlowEuler => flow_only(row)?,
                })
            }
            (
                NoiseSchedule::Flow {
                    num_train_timesteps,
                    shift,
                },
                Build::FlowEuler,
            ) => Ok(flow_euler(req, *num_train_timesteps, *shift)),
            (NoiseSchedule::Flow { .. }, _) => Err(PluginError(format!(
                "`{}` needs a discrete (variance-preserving) schedule; flow-matching models use {}",
                row.name,
                names(On::Flow).join(", ")
            ))),
            (NoiseSchedule::Discrete { .. }, _) => flow_only(row),
        }
    }
}

fn flow_only(row: &Row) -> PluginResult<Plan> {
    Err(PluginError(format!(
        "`{}` needs a flow-matching model (schedule kind `flow`); discrete-schedule models use {}",
        row.name,
        names(On::Discrete).join(", ")
    )))
}

fn on_name(on: On) -> &'static str {
    match on {
        On::Discrete => "discrete",
        On::Flow => "flow",
    }
}

/// The names of the samplers for one kind of schedule.
fn names(on: On) -> Vec<&'static str> {
    SAMPLERS
        .iter()
        .filter(|r| r.on == on)
        .map(|r| r.name)
        .collect()
}

fn unknown(name: &str) -> PluginError {
    let names: Vec<&str> = SAMPLERS.iter().map(|r| r.name).collect();
    PluginError(format!(
        "unknown sampler `{name}` (available: {})",
        names.join(", ")
    ))
}

/// Accumulates evaluations and steps.
struct Builder {
    param: Parameterization,
    evals: Vec<PlanEval>,
    steps: Vec<PlanStep>,
    step_evals: Vec<usize>,
    noise_draws: usize,
}

impl Builder {
    fn new(param: Parameterization) -> Self {
        Builder {
            param,
            evals: Vec::new(),
            steps: Vec::new(),
            step_evals: Vec::new(),
            noise_draws: 0,
        }
    }

    /// The current state (index = number of steps so far).
    fn state(&self) -> Lin {
        Lin::of(Src::State(self.steps.len()))
    }

    /// Evaluate the model on `input` at model time `t` with input scales (α, σ); returns the
    /// predicted clean sample and noise as linear combinations.
    fn eval(&mut self, t: f64, alpha: f64, sigma: f64, input: Lin) -> (Lin, Lin, usize) {
        let k = self.evals.len();
        self.evals.push(PlanEval {
            t,
            alpha,
            sigma,
            input: input.terms(),
        });
        self.step_evals.push(k);
        let o = Lin::of(Src::Out(k));
        let (x0, eps) = predictions(self.param, &input, &o, alpha, sigma);
        (x0, eps, k)
    }

    fn noise(&mut self) -> Lin {
        self.noise_draws += 1;
        Lin::of(Src::Noise(self.noise_draws - 1))
    }

    fn end_step(&mut self, next: Lin, alpha_next: f64, sigma_next: f64) {
        self.steps.push(PlanStep {
            evals: std::mem::take(&mut self.step_evals),
            next: next.terms(),
            alpha_next,
            sigma_next,
        });
    }

    fn finish(
        self,
        req: &PlanRequest,
        timesteps: Vec<f64>,
        sigmas: Option<Vec<f64>>,
        start_alpha: f64,
        start_sigma: f64,
    ) -> Plan {
        Plan {
            sampler: req.sampler.clone(),
            num_inference_steps: req.steps,
            start_index: req.start_index,
            timesteps,
            sigmas,
            start_alpha,
            start_sigma,
            evals: self.evals,
            steps: self.steps,
            noise_draws: self.noise_draws,
        }
    }
}

/// (x̂0, ε̂) from the model input x and output o at (α, σ).
fn predictions(param: Parameterization, x: &Lin, o: &Lin, alpha: f64, sigma: f64) -> (Lin, Lin) {
    match param {
        // x = αx0 + σε, o = ε.
        Parameterization::Eps => ((x.clone() - o.clone() * sigma) * (1.0 / alpha), o.clone()),
        // o = αε − σx0 (with α² + σ² = 1 for VP schedules).
        Parameterization::V => {
            let n = alpha * alpha + sigma * sigma;
            (
                (x.clone() * alpha - o.clone() * sigma) * (1.0 / n),
                (x.clone() * sigma + o.clone() * alpha) * (1.0 / n),
            )
        }
        // x = (1−s)x0 + sε, o = ε − x0.
        Parameterization::Flow => (x.clone() - o.clone() * sigma, x.clone() + o.clone() * alpha),
    }
}

fn spacing_or(req: &PlanRequest, default: Spacing) -> Spacing {
    req.spacing.unwrap_or(default)
}

/// Start scales: text-to-image starts from noise scaled as diffusers' `init_noise_sigma`
/// (converted to the VP state), image-to-image from `add_noise` at the start step.
fn start_scales(req: &PlanRequest, alpha: f64, sigma: f64, t2i_sigma: f64) -> (f64, f64) {
    if req.start_index == 0 && !req.img2img {
        (0.0, t2i_sigma)
    } else {
        (alpha, sigma)
    }
}

/// DDIM (η ≥ 0) and DDPM: integer timesteps, previous timestep t − N/m.
fn ddim_like(req: &PlanRequest, ac: &[f64], ddpm: bool) -> Plan {
    let n = ac.len();
    let m = req.steps;
    let ts = schedule::integer_timesteps(n, m, spacing_or(req, Spacing::Leading), req.steps_offset);
    let final_alpha = if req.set_alpha_to_one.unwrap_or(true) {
        1.0
    } else {
        ac[0]
    };
    let ratio = (n / m) as f64;
    let abar = |t: f64| {
        if t >= 0.0 {
            ac[(t as usize).min(n - 1)]
        } else {
            final_alpha
        }
    };
    let mut b = Builder::new(req.parameterization);
    let a0 = abar(ts[req.start_index]);
    let (sa, ss) = start_scales(req, a0.sqrt(), (1.0 - a0).sqrt(), 1.0);
    for &t in &ts[req.start_index..] {
        let prev = t - ratio;
        let (at, ap) = (abar(t), abar(prev));
        let (alpha, sigma) = (at.sqrt(), (1.0 - at).sqrt());
        let x = b.state();
        let (x0, eps, _) = b.eval(t, alpha, sigma, x.clone());
        let next = if ddpm {
            // DDPMScheduler.step with variance_type fixed_small ("one" for t_prev < 0).
            let ap = if prev >= 0.0 { ap } else { 1.0 };
            let cur_alpha = at / ap;
            let cur_beta = 1.0 - cur_alpha;
            let c0 = ap.sqrt() * cur_beta / (1.0 - at);
            let cx = cur_alpha.sqrt() * (1.0 - ap) / (1.0 - at);
            let mean = x0 * c0 + x * cx;
            if t > 0.0 {
                let var = ((1.0 - ap) / (1.0 - at) * cur_beta).max(1e-20);
                let z = b.noise();
                mean + z * var.sqrt()
            } else {
                mean
            }
        } else {
            // DDIMScheduler.step: σ_η = η·√((1−ᾱp)/(1−ᾱt))·√(1−ᾱt/ᾱp).
            let std = req.eta * ((1.0 - ap) / (1.0 - at)).sqrt() * (1.0 - at / ap).sqrt();
            let dir = eps * (1.0 - ap - std * std).max(0.0).sqrt();
            let mut next = x0 * ap.sqrt() + dir;
            if std > 0.0 {
                let z = b.noise();
                next = next + z * std;
            }
            next
        };
        let ap_state = if ddpm && prev < 0.0 { 1.0 } else { ap };
        b.end_step(next, ap_state.sqrt(), (1.0 - ap_state).sqrt());
    }
    b.finish(req, ts, None, sa, ss)
}

/// VP scales (α, σ) of a k-diffusion sigma s: α = 1/√(1+s²), σ = s·α.
fn vp(s: f64) -> (f64, f64) {
    let a = 1.0 / (1.0 + s * s).sqrt();
    (a, s * a)
}

/// Half log-SNR λ = ln α − ln σ of a k-diffusion sigma.
fn lambda(s: f64) -> f64 {
    let (a, sg) = vp(s);
    a.ln() - sg.ln()
}

/// Euler, Euler-ancestral and Heun in the k-diffusion form, converted to VP states.
fn euler_family(req: &PlanRequest, ac: &[f64]) -> Plan {
    let n = ac.len();
    let m = req.steps;
    let default_spacing = Spacing::Linspace;
    let spacing = spacing_or(req, default_spacing);
    let ts = schedule::euler_timesteps(n, m, spacing, req.steps_offset);
    let sig = schedule::sigmas_at(&ts, ac);
    let max_sigma = sig.iter().cloned().fold(0.0, f64::max);
    let init_noise_sigma = match spacing {
        Spacing::Linspace | Spacing::Trailing => max_sigma,
        Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
    };
    let s0 = sig[req.start_index];
    let (a0, sg0) = vp(s0);
    // x_ve = init_noise_sigma·ε ⇒ x_vp = α(s0)·init_noise_sigma·ε.
    let (sa, ss) = start_scales(req, a0, sg0, a0 * init_noise_sigma);
    let mut b = Builder::new(req.parameterization);
    for i in req.start_index..m {
        let (s, s_next) = (sig[i], sig[i + 1]);
        let (a, sg) = vp(s);
        let (an, sgn) = vp(s_next);
        let x_vp = b.state();
        let x_ve = x_vp.clone() * (1.0 / a);
        let (x0, _, _) = b.eval(ts[i], a, sg, x_vp);
        let d = (x_ve.clone() - x0) * (1.0 / s);
        let next_ve = match req.sampler.as_str() {
            "euler-a" => {
                let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s))
                    .max(0.0)
                    .sqrt();
                let down = (s_next * s_next - up * up).max(0.0).sqrt();
                let mut nx = x_ve + d * (down - s);
                if up > 0.0 {
                    let z = b.noise();
                    nx = nx + z * up;
                }
                nx
            }
            "heun" if s_next > 0.0 => {
                let x2_ve = x_ve.clone() + d.clone() * (s_next - s);
                let t_next = ts.get(i + 1).copied().unwrap_or(0.0);
                let (x0b, _, _) = b.eval(t_next, an, sgn, x2_ve.clone() * an);
                let d2 = (x2_ve - x0b) * (1.0 / s_next);
                x_ve + (d + d2) * (0.5 * (s_next - s))
            }
            _ => x_ve + d * (s_next - s),
        };
        b.end_step(next_ve * an, an, sgn);
    }
    b.finish(req, ts, Some(sig), sa, ss)
}

/// DPM-Solver++(2M) with `lower_order_final` and `final_sigmas_type = zero`.
fn dpmpp_2m(req: &PlanRequest, ac: &[f64]) -> Plan {
    let n = ac.len();
    let m = req.steps;
    let ts = schedule::dpm_timesteps(n, m, spacing_or(req, Spacing::Linspace), req.steps_offset);
    let sig = schedule::sigmas_at(&ts, ac);
    let (a0, sg0) = vp(sig[req.start_index]);
    let (sa, ss) = start_scales(req, a0, sg0, 1.0);
    let mut b = Builder::new(req.parameterization);
    let mut prev: Option<(Lin, f64)> = None; // (x̂0 of the previous evaluation, its λ)
    for i in req.start_index..m {
        let (s, s_next) = (sig[i], sig[i + 1]);
        let (a, sg) = vp(s);
        let (an, sgn) = vp(s_next);
        let x = b.state();
        let (x0, _, _) = b.eval(ts[i], a, sg, x.clone());
        let last = i == m - 1;
        let next = if s_next == 0.0 {
            // σ' = 0: the first-order update reduces to x̂0.
            x0.clone()
        } else {
            let h = lambda(s_next) - lambda(s);
            let base = x * (sgn / sg) - x0.clone() * (an * ((-h).exp() - 1.0));
            match (&prev, last) {
                (Some((x0_prev, lam_prev)), false) => {
                    let r0 = (lambda(s) - lam_prev) / h;
                    let d1 = (x0.clone() - x0_prev.clone()) * (1.0 / r0);
                    base - d1 * (0.5 * an * ((-h).exp() - 1.0))
                }
                _ => base,
            }
        };
        prev = Some((x0, lambda(s)));
        b.end_step(next, an, sgn);
    }
    b.finish(req, ts, Some(sig), sa, ss)
}

/// UniPC with diffusers' defaults (`solver_order = 2`, `solver_type = bh2`, `predict_x0`,
/// `lower_order_final`, corrector on every step). The model is evaluated at the predictor's
/// state; the corrected state, which continues the trajectory, is a linear combination of the
/// previous corrected state and x0-predictions, so it never needs to be materialised.
fn unipc(req: &PlanRequest, ac: &[f64]) -> Plan {
    let n = ac.len();
    let m = req.steps;
    let ts = schedule::dpm_timesteps(n, m, spacing_or(req, Spacing::Linspace), req.steps_offset);
    let sig = schedule::sigmas_at(&ts, ac);
    let (a0, sg0) = vp(sig[req.start_index]);
    let (sa, ss) = start_scales(req, a0, sg0, 1.0);
    let mut b = Builder::new(req.parameterization);
    // x0-predictions of the evaluations so far (most recent last).
    let mut ms: Vec<Lin> = Vec::new();
    let mut last_sample: Option<Lin> = None;
    let mut prev_order = 0usize;
    let mut lower_order_nums = 0usize;
    for i in req.start_index..m {
        let (a, sg) = vp(sig[i]);
        let x_pred = b.state();
        let (x0, _, _) = b.eval(ts[i], a, sg, x_pred.clone());
        // UniC: correct the predicted state with this evaluation.
        let x = match &last_sample {
            Some(last) => {
                let (s_t, s_s0) = (sig[i], sig[i - 1]);
                let (alpha_t, sigma_t) = vp(s_t);
                let (_, sigma_s0) = vp(s_s0);
                let h = lambda(s_t) - lambda(s_s0);
                let hh = -h;
                let h_phi_1 = hh.exp_m1();
                let b_h = hh.exp_m1();
                let m0 = ms[ms.len() - 1].clone();
                let base = last.clone() * (sigma_t / sigma_s0) - m0.clone() * (alpha_t * h_phi_1);
                let d1_t = x0.clone() - m0.clone();
                let corr = if prev_order == 1 {
                    d1_t * 0.5
                } else {
                    // Order 2: one earlier output and the 2×2 system R ρ = b.
                    let rk = (lambda(sig[i - 2]) - lambda(s_s0)) / h;
                    let d1 = (ms[ms.len() - 2].clone() - m0) * (1.0 / rk);
                    let phi_k1 = h_phi_1 / hh - 1.0;
                    let b1 = phi_k1 / b_h;
                    let phi_k2 = phi_k1 / hh - 0.5;
                    let b2 = phi_k2 * 2.0 / b_h;
                    // R = [[1, 1], [rk, 1]].
                    let det = 1.0 - rk;
                    let rho0 = (b1 - b2) / det;
                    let rho1 = (b2 - rk * b1) / det;
                    d1 * rho0 + d1_t * rho1
                };
                base - corr * (alpha_t * b_h)
            }
            None => x_pred,
        };
        ms.push(x0);
        let order = 2.min(m - i).min(lower_order_nums + 1);
        last_sample = Some(x.clone());
        // UniP: predict the next state.
        let (s0, s_t) = (sig[i], sig[i + 1]);
        let (alpha_t, sigma_t) = vp(s_t);
        let next = if s_t == 0.0 {
            // σ' = 0 (always first order there): the update reduces to x̂0.
            ms[ms.len() - 1].clone()
        } else {
            let (_, sigma_s0) = vp(s0);
            let h = lambda(s_t) - lambda(s0);
            let hh = -h;
            let h_phi_1 = hh.exp_m1();
            let b_h = hh.exp_m1();
            let m0 = ms[ms.len() - 1].clone();
            let mut next = x * (sigma_t / sigma_s0) - m0.clone() * (alpha_t * h_phi_1);
            if order == 2 {
                let rk = (lambda(sig[i - 1]) - lambda(s0)) / h;
                let d1 = (ms[ms.len() - 2].clone() - m0) * (1.0 / rk);
                next = next - d1 * (0.5 * alpha_t * b_h);
            }
            next
        };
        lower_order_nums = (lower_order_nums + 1).min(2);
        prev_order = order;
        let (an, sgn) = vp(s_t);
        b.end_step(next, an, sgn);
    }
    b.finish(req, ts, Some(sig), sa, ss)
}

/// Flow-matching Euler: x' = x + (s' − s)·v̂ with SD3's shifted sigmas.
fn flow_euler(req: &PlanRequest, n: usize, shift: f64) -> Plan {
    let m = req.steps;
    let sig = schedule::flow_sigmas(n, m, shift);
    let ts: Vec<f64> = sig[..m].iter().map(|s| s * n as f64).collect();
    let s0 = sig[req.start_index];
    let (sa, ss) = start_scales(req, 1.0 - s0, s0, 1.0);
    let mut b = Builder::new(req.parameterization);
    for i in req.start_index..m {
        let (s, s_next) = (sig[i], sig[i + 1]);
        let x = b.state();
        let (x0, eps, _) = b.eval(ts[i], 1.0 - s, s, x.clone());
        // v̂ = ε̂ − x̂0, written through the predictions so any parameterization works.
        let v = eps - x0;
        b.end_step(x + v * (s_next - s), 1.0 - s_next, s_next);
    }
    b.finish(req, ts, Some(sig), sa, ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(sampler: &str, steps: usize, start_index: usize, img2img: bool) -> PlanRequest {
        let n = 1000;
        let alphas_cumprod: Vec<f64> = (0..n)
            .map(|i| 1.0 - 0.9 * (i as f64 + 1.0) / n as f64)
            .collect();
        PlanRequest {
            sampler: sampler.into(),
            steps,
            schedule: NoiseSchedule::Discrete { alphas_cumprod },
            parameterization: Parameterization::Eps,
            spacing: Some(Spacing::Trailing),
            steps_offset: 0,
            start_index,
            eta: 0.0,
            set_alpha_to_one: Some(true),
            img2img,
        }
    }

    #[test]
    fn image_to_image_starts_at_the_start_index() {
        for sampler in ["ddim", "ddpm", "euler", "euler-a", "heun", "dpm++2m"] {
            let full = Builtin::plan(&req(sampler, 10, 0, false)).unwrap();
            let part = Builtin::plan(&req(sampler, 10, 4, false)).unwrap();
            assert_eq!(part.steps.len(), 6, "{sampler}");
            assert_eq!(
                part.timesteps, full.timesteps,
                "{sampler}: the schedule is the full one"
            );
            let first = &part.evals[0];
            assert_eq!(first.t, full.timesteps[4], "{sampler}");
            // The start is add_noise at that time: α x0 + σ ε with the evaluation's own scales.
            assert!(
                (part.start_alpha - first.alpha).abs() < 1e-12
                    && (part.start_sigma - first.sigma).abs() < 1e-12
            );
            // Text-to-image starts from noise only.
            assert_eq!(full.start_alpha, 0.0, "{sampler}");
            let forced = Builtin::plan(&req(sampler, 10, 0, true)).unwrap();
            assert!(
                forced.start_alpha > 0.0,
                "{sampler}: img2img at index 0 keeps the image"
            );
        }
        assert!(Builtin::plan(&req("ddim", 10, 10, false)).is_err());
    }

    #[test]
    fn stochastic_samplers_draw_noise_and_deterministic_ones_do_not() {
        for (s, noisy) in [
            ("ddim", false),
            ("euler", false),
            ("heun", false),
            ("dpm++2m", false),
            ("ddpm", true),
            ("euler-a", true),
        ] {
            let p = Builtin::plan(&req(s, 8, 0, false)).unwrap();
            assert_eq!(p.noise_draws > 0, noisy, "{s}");
            let info = Builtin::list().into_iter().find(|i| i.name == s).unwrap();
            assert_eq!(info.stochastic, noisy);
            let evals_per_step = p.evals.len() as f64 / p.steps.len() as f64;
            assert!(evals_per_step <= info.evals_per_step as f64);
        }
        let mut r = req("ddim", 8, 0, false);
        r.eta = 1.0;
        assert!(
            Builtin::plan(&r).unwrap().noise_draws > 0,
            "DDIM with η > 0 is stochastic"
        );
    }

    #[test]
    fn unknown_and_mismatched_samplers_are_refused_clearly() {
        let e = Builtin::plan(&req("plms", 8, 0, false)).unwrap_err();
        assert!(
            e.0.contains("unknown sampler `plms`") && e.0.contains("dpm++2m"),
            "{e}"
        );
        let e = Builtin::plan(&req("flow-euler", 8, 0, false)).unwrap_err();
        assert!(e.0.contains("flow-matching"), "{e}");
        let mut r = req("ddim", 8, 0, false);
        r.schedule = NoiseSchedule::Flow {
            num_train_timesteps: 1000,
            shift: 3.0,
        };
        assert!(Builtin::plan(&r).unwrap_err().0.contains("discrete"));
    }
}
