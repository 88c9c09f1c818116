//! A sampler plugin as a user writes one, against `adt-plugin-api` alone: `ddim-trailing`,
//! deterministic DDIM (η = 0) on diffusers' `timestep_spacing = "trailing"` (timesteps
//! `round(arange(N, 0, −N/m)) − 1`, so the first step starts at the last training timestep),
//! for ε- and v-prediction models on discrete schedules.

use adt_plugin_api::{
    NoiseSchedule, Parameterization, Plan, PlanEval, PlanRequest, PlanStep, PluginError,
    PluginResult, SamplerInfo, SamplerPlugin, Src, Term,
};

struct Trailing;

adt_plugin_api::export_sampler_plugin!(Trailing, name = "extra-samplers", version = "0.1.0");

const NAME: &str = "ddim-trailing";

fn term(src: Src, coef: f64) -> Term {
    Term { src, coef }
}

impl SamplerPlugin for Trailing {
    fn list() -> Vec<SamplerInfo> {
        vec![SamplerInfo {
            name: NAME.into(),
            order: 1,
            stochastic: false,
            evals_per_step: 1,
            schedules: vec!["discrete".into()],
            mirrors: "DDIMScheduler(timestep_spacing=\"trailing\")".into(),
            description: "DDIM (η = 0) with trailing timestep spacing".into(),
        }]
    }

    fn plan(req: &PlanRequest) -> PluginResult<Plan> {
        if req.sampler != NAME {
            return Err(PluginError(format!(
                "unknown sampler `{}` (available: {NAME})",
                req.sampler
            )));
        }
        let NoiseSchedule::Discrete { alphas_cumprod: ac } = &req.schedule else {
            return Err(PluginError::msg(
                "`ddim-trailing` needs a discrete (variance-preserving) schedule",
            ));
        };
        let (n, m) = (ac.len(), req.steps);
        if m == 0 || m > n || req.start_index >= m {
            return Err(PluginError(format!(
                "bad steps {m} / start index {} for a {n}-step schedule",
                req.start_index
            )));
        }
        let ratio = n as f64 / m as f64;
        let ts: Vec<f64> = (0..m)
            .map(|i| (n as f64 - i as f64 * ratio).round() - 1.0)
            .collect();
        let step = (n / m) as f64;
        let abar = |t: f64| if t >= 0.0 { ac[t as usize] } else { 1.0 };
        let a0 = abar(ts[req.start_index]);
        let (start_alpha, start_sigma) = if req.start_index == 0 && !req.img2img {
            (0.0, 1.0)
        } else {
            (a0.sqrt(), (1.0 - a0).sqrt())
        };
        let mut evals = Vec::new();
        let mut steps = Vec::new();
        for (j, &t) in ts[req.start_index..].iter().enumerate() {
            let (at, ap) = (abar(t), abar(t - step));
            let (a, s) = (at.sqrt(), (1.0 - at).sqrt());
            let (a_p, s_p) = (ap.sqrt(), (1.0 - ap).sqrt());
            let k = evals.len();
            evals.push(PlanEval {
                t,
                alpha: a,
                sigma: s,
                input: vec![term(Src::State(j), 1.0)],
            });
            // next = α_p·x̂0 + σ_p·ε̂ with x̂0, ε̂ from the state x and the output o.
            let (cx, co) = match req.parameterization {
                Parameterization::Eps => (a_p / a, s_p - a_p * s / a),
                Parameterization::V => (a_p * a + s_p * s, s_p * a - a_p * s),
                Parameterization::Flow => {
                    return Err(PluginError::msg(
                        "`ddim-trailing` plans for ε- and v-prediction models",
                    ));
                }
            };
            steps.push(PlanStep {
                evals: vec![k],
                next: vec![term(Src::State(j), cx), term(Src::Out(k), co)],
                alpha_next: a_p,
                sigma_next: s_p,
            });
        }
        Ok(Plan {
            sampler: NAME.into(),
            num_inference_steps: m,
            start_index: req.start_index,
            timesteps: ts,
            sigmas: None,
            start_alpha,
            start_sigma,
            evals,
            steps,
            noise_draws: 0,
        })
    }
}
