//! Convergence of every deterministic (ODE) sampler on a problem with a known answer.
//!
//! Data: a diagonal Gaussian N(μ, diag(s²)). Its exact ε-prediction at (α, σ) is
//! ε̂(x) = σ·(x − αμ)/(α²s² + σ²), an affine map, so a plan can be executed exactly on affine
//! forms (state = Σ_k c_k·z_k + b over independent standard normals z_k): the sampled
//! distribution's mean and variance come out in closed form with no Monte-Carlo noise. Started
//! from the exact marginal at the first step (image-to-image at index 0), the exact ODE solution
//! is the data distribution itself, so what remains is discretisation error, which must fall
//! like steps^(−order).

use adt_plugin_api::{
    NoiseSchedule, Parameterization, Plan, PlanRequest, SamplerPlugin, Spacing, Src,
};
use adt_plugin_samplers::Builtin;

/// x = Σ c_k z_k + b, with z_0 = the data's own randomness and z_1 = the start noise.
#[derive(Clone, Debug)]
struct Affine {
    c: Vec<f64>,
    b: f64,
}

impl Affine {
    fn zero(k: usize) -> Self {
        Affine {
            c: vec![0.0; k],
            b: 0.0,
        }
    }
    fn axpy(&mut self, a: f64, x: &Affine) {
        for (ci, xi) in self.c.iter_mut().zip(&x.c) {
            *ci += a * xi;
        }
        self.b += a * x.b;
    }
    fn var(&self) -> f64 {
        self.c.iter().map(|c| c * c).sum()
    }
}

fn sd_schedule() -> Vec<f64> {
    // Scaled-linear betas 0.00085..0.012 (Stable Diffusion), in f64.
    let n = 1000;
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0;
    (0..n)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / (n - 1) as f64).powi(2);
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

/// Execute a plan on one dimension with data N(mu, s²); returns (mean, variance) of every state.
fn run(plan: &Plan, param: Parameterization, mu: f64, s: f64) -> Vec<(f64, f64)> {
    let k = 2;
    // Start: α·x0 + σ·ε with x0 = μ + s·z0 and ε = z1.
    let mut start = Affine::zero(k);
    start.c[0] = plan.start_alpha * s;
    start.b = plan.start_alpha * mu;
    start.c[1] = plan.start_sigma;
    let mut states = vec![start];
    let mut outs: Vec<Affine> = Vec::new();
    let combine = |terms: &[adt_plugin_api::Term], states: &[Affine], outs: &[Affine]| {
        let mut acc = Affine::zero(k);
        for t in terms {
            match t.src {
                Src::State(i) => acc.axpy(t.coef, &states[i]),
                Src::Out(i) => acc.axpy(t.coef, &outs[i]),
                Src::Noise(_) => panic!("deterministic samplers draw no noise"),
            }
        }
        acc
    };
    for step in &plan.steps {
        for &e in &step.evals {
            let ev = &plan.evals[e];
            let x = combine(&ev.input, &states, &outs);
            let (a, sg) = (ev.alpha, ev.sigma);
            // Exact ε̂ = σ (x − αμ) / (α² s² + σ²).
            let g = sg / (a * a * s * s + sg * sg);
            let mut eps = Affine::zero(k);
            eps.axpy(g, &x);
            eps.b -= g * a * mu;
            let out = match param {
                Parameterization::Eps => eps,
                Parameterization::V => {
                    // v = α ε − σ x0, x0 = (x − σ ε)/α ⇒ v = (α + σ²/α) ε − (σ/α) x.
                    let mut v = Affine::zero(k);
                    v.axpy(a + sg * sg / a, &eps);
                    v.axpy(-sg / a, &x);
                    v
                }
                Parameterization::Flow => unreachable!(),
            };
            outs.push(out);
        }
        let next = combine(&step.next, &states, &outs);
        states.push(next);
    }
    states.iter().map(|a| (a.b, a.var())).collect()
}

/// Error of the sampled distribution (|Δmean| + |Δvariance|, summed over three dimensions).
/// `at_end`: of the final sample against the data; otherwise of the state at t ≈ 500 against
/// the exact marginal N(αμ, α²s² + σ²) there. The second isolates the ODE solver's order:
/// near t = 0, spacings that are uniform in t take log-SNR steps that do not shrink with m,
/// and diffusers' DPM++(2M) takes its last step (to σ = 0) at first order
/// (`lower_order_final`, `final_sigmas_type = zero`), which caps the end-to-end order at 1.
fn error(
    sampler: &str,
    steps: usize,
    spacing: Spacing,
    param: Parameterization,
    at_end: bool,
) -> f64 {
    let req = PlanRequest {
        sampler: sampler.into(),
        steps,
        schedule: NoiseSchedule::Discrete {
            alphas_cumprod: sd_schedule(),
        },
        parameterization: param,
        spacing: Some(spacing),
        steps_offset: 0,
        start_index: 0,
        eta: 0.0,
        set_alpha_to_one: Some(true),
        img2img: true,
    };
    let plan = Builtin::plan(&req).unwrap();
    let mut err = 0.0;
    for (mu, s) in [(0.5, 0.3), (-0.4, 0.8), (0.1, 0.05)] {
        let states = run(&plan, param, mu, s);
        let (m, v, em, ev) = if at_end {
            let (m, v) = *states.last().unwrap();
            (m, v, mu, s * s)
        } else {
            // The step that lands closest to t = 500 (a grid point of every schedule used).
            let k = (0..plan.steps.len() - 1)
                .min_by(|&i, &j| {
                    let d = |k: usize| (plan.timesteps[k + 1] - 500.0).abs();
                    d(i).total_cmp(&d(j))
                })
                .unwrap();
            let (a, sg) = (plan.steps[k].alpha_next, plan.steps[k].sigma_next);
            let (m, v) = states[k + 1];
            (m, v, a * mu, a * a * s * s + sg * sg)
        };
        err += (m - em).abs() + (v - ev).abs();
    }
    err
}

fn slope(
    sampler: &str,
    spacing: Spacing,
    param: Parameterization,
    at_end: bool,
) -> (f64, Vec<f64>) {
    let steps = [8, 16, 32, 64];
    let errs: Vec<f64> = steps
        .iter()
        .map(|&n| error(sampler, n, spacing, param, at_end))
        .collect();
    // Least-squares slope of log(err) against log(steps).
    let xs: Vec<f64> = steps.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errs.iter().map(|e| e.ln()).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / 4.0, ys.iter().sum::<f64>() / 4.0);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    (num / den, errs)
}

/// DDIM steps from t to t − N//m whatever the spacing (as diffusers does), so only `leading`
/// spacing (whose timesteps are exactly multiples of N//m) makes its steps consistent with the
/// next evaluation's time; the others are tested on diffusers' default for them.
fn spacing_for(sampler: &str) -> Spacing {
    if sampler == "ddim" {
        Spacing::Leading
    } else {
        Spacing::Linspace
    }
}

#[test]
fn ode_samplers_converge_at_their_order() {
    for (sampler, order) in [
        ("ddim", 1.0),
        ("euler", 1.0),
        ("heun", 2.0),
        ("dpm++2m", 2.0),
        ("unipc", 3.0),
    ] {
        for param in [Parameterization::Eps, Parameterization::V] {
            let spacing = spacing_for(sampler);
            let (k, errs) = slope(sampler, spacing, param, false);
            eprintln!("{sampler:>8} {param:?}: ODE errors {errs:?}, slope {k:.2}");
            assert!(
                errs.windows(2).all(|w| w[1] < w[0]),
                "{sampler}: error must fall with steps: {errs:?}"
            );
            assert!(
                k < -(order - 0.3),
                "{sampler}: slope {k:.2} is not order {order}"
            );
            assert!(
                k > -(order + 1.5),
                "{sampler}: slope {k:.2} suspiciously steep"
            );
            let (k_end, errs) = slope(sampler, spacing, param, true);
            eprintln!("{sampler:>8} {param:?}: end-to-end errors {errs:?}, slope {k_end:.2}");
            assert!(
                errs.windows(2).all(|w| w[1] < w[0]),
                "{sampler}: error must fall with steps: {errs:?}"
            );
            assert!(k_end < -0.7, "{sampler}: end-to-end slope {k_end:.2}");
        }
    }
}

#[test]
fn many_steps_reach_the_data_distribution() {
    for sampler in ["ddim", "euler", "heun", "dpm++2m", "unipc"] {
        let e = error(
            sampler,
            500,
            spacing_for(sampler),
            Parameterization::Eps,
            true,
        );
        assert!(e < 1e-2, "{sampler}: error {e} at 500 steps");
    }
}
