//! Gradient paths through a sampler [`Plan`] (DESIGN §1.3).
//!
//! A plan is linear: every state is a combination of the previous states, the model outputs and
//! noise, and every network input a combination of states and earlier outputs. With the result
//! x̂0 = last state and an upstream cotangent g = ∂L/∂x̂0, the paths differ in what the backward
//! pass may cross:
//!
//! * [`GradPath::Drtune`] — stop-gradient on every network input; the linear terms keep their
//!   gradient, so ∂L/∂x_i = (∏ a_j)·g, with a_j the coefficient of the previous state;
//! * [`GradPath::Adt`] — additionally a stop-gradient on the linear term's deviation from the
//!   identity, x_{i-1} = x_i + sg((a_i − 1)·x_i) + b_i·ε̂_i, so ∂L/∂x_i = g at every step;
//! * [`GradPath::Full`] — no stop-gradient: reverse mode through every evaluation, network
//!   inputs included (every evaluation is recomputed with its input cotangent).
//!
//! For `adt` and `drtune` the cotangent of each model output follows from the plan alone
//! ([`linear_adjoint`]); the tuner then asks the plugin for one vector–Jacobian product per
//! trained evaluation. `full` needs the model for the input cotangents ([`full_backward`]).

use adt_plugin_api::{HostTensor, Plan, Src, Term};
use adt_plugin_host::Denoise;

use crate::rollout::{Guidance, Trace};
use crate::{Error, Result};

/// Which gradient path the generator update uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradPath {
    /// ADT's constrained path (default): equal gradient at every step.
    Adt,
    /// DRTune's path: the linear terms keep their gradient.
    Drtune,
    /// No stop-gradient (costly ablation).
    Full,
}

impl GradPath {
    /// Parse `adt`, `drtune`, `full`.
    pub fn parse(s: &str) -> Option<GradPath> {
        match s {
            "adt" => Some(GradPath::Adt),
            "drtune" => Some(GradPath::Drtune),
            "full" => Some(GradPath::Full),
            _ => None,
        }
    }
}

/// Cotangents of the states and of the model outputs.
#[derive(Debug, Clone)]
pub struct Adjoint {
    /// ∂L/∂state_i (None where nothing flows).
    pub states: Vec<Option<HostTensor>>,
    /// ∂L/∂output_k (None where nothing flows).
    pub outputs: Vec<Option<HostTensor>>,
    /// ∂L/∂(network input of evaluation k) — only under [`GradPath::Full`].
    pub inputs: Vec<Option<HostTensor>>,
}

fn axpy(acc: &mut Option<HostTensor>, coef: f64, g: &HostTensor) {
    match acc {
        Some(a) => {
            for (x, y) in a.data.iter_mut().zip(&g.data) {
                *x = (*x as f64 + coef * *y as f64) as f32;
            }
        }
        None => {
            *acc = Some(HostTensor {
                shape: g.shape.clone(),
                data: g.data.iter().map(|y| (coef * *y as f64) as f32).collect(),
            })
        }
    }
}

/// The adjoint of a plan under `adt` or `drtune` (no model calls).
pub fn linear_adjoint(plan: &Plan, path: GradPath, g_final: &HostTensor) -> Result<Adjoint> {
    if path == GradPath::Full {
        return Err(Error::Invalid(
            "the full path needs the model: use full_backward".into(),
        ));
    }
    let m = plan.steps.len();
    let mut adj = Adjoint::start(plan, g_final);
    for j in (0..m).rev() {
        let Some(g) = adj.states[j + 1].clone() else {
            continue;
        };
        // drtune keeps every state term; adt passes the previous state through unchanged
        // (identity) and stops the gradient of older states referenced by multistep formulas.
        adj.spread(&plan.steps[j].next, &g, |i, coef| match path {
            GradPath::Adt => (i == j).then_some(1.0),
            _ => Some(coef),
        });
    }
    Ok(adj)
}

impl Adjoint {
    /// Nothing but ∂L/∂x̂0 on the last state.
    fn start(plan: &Plan, g_final: &HostTensor) -> Adjoint {
        let m = plan.steps.len();
        let mut states = vec![None; m + 1];
        states[m] = Some(g_final.clone());
        Adjoint {
            states,
            outputs: vec![None; plan.evals.len()],
            inputs: vec![None; plan.evals.len()],
        }
    }

    /// Backward through one linear combination whose result has cotangent `g`: outputs get
    /// `coef·g`; state `i` gets `state_coef(i, coef)·g` where that is `Some`; noise nothing.
    fn spread(
        &mut self,
        terms: &[Term],
        g: &HostTensor,
        state_coef: impl Fn(usize, f64) -> Option<f64>,
    ) {
        for term in terms {
            match term.src {
                Src::State(i) => {
                    if let Some(c) = state_coef(i, term.coef) {
                        axpy(&mut self.states[i], c, g);
                    }
                }
                Src::Out(k) => axpy(&mut self.outputs[k], term.coef, g),
                Src::Noise(_) => {}
            }
        }
    }
}

/// Anything that evaluates the denoiser and its vector–Jacobian product: the plugin
/// ([`adt_plugin_host::Model`]) or, in tests, a model called directly.
pub trait Denoiser {
    /// One evaluation without gradient.
    fn denoise(&mut self, d: &Denoise<'_>) -> Result<HostTensor>;
    /// Recompute one evaluation with gradient, accumulate J_θᵀ·cotangent, optionally return
    /// the input cotangent.
    fn denoise_vjp(
        &mut self,
        d: &Denoise<'_>,
        cotangent: &HostTensor,
        want_input: bool,
    ) -> Result<Option<HostTensor>>;
}

impl Denoiser for adt_plugin_host::Model {
    fn denoise(&mut self, d: &Denoise<'_>) -> Result<HostTensor> {
        Ok(adt_plugin_host::Model::denoise(self, d)?)
    }
    fn denoise_vjp(
        &mut self,
        d: &Denoise<'_>,
        cotangent: &HostTensor,
        want_input: bool,
    ) -> Result<Option<HostTensor>> {
        Ok(adt_plugin_host::Model::denoise_vjp(
            self, d, cotangent, want_input,
        )?)
    }
}

/// A finished rollout to differentiate.
#[derive(Clone, Copy)]
pub struct Rollout<'a> {
    /// The plan it executed.
    pub plan: &'a Plan,
    /// What it kept.
    pub trace: &'a Trace,
    /// Its conditioning.
    pub guidance: &'a Guidance,
    /// Whether the unconditional branch of classifier-free guidance carries no gradient.
    pub detach_uncond: bool,
}

impl<'a> Rollout<'a> {
    /// The call of evaluation `k` as it was made in the rollout (`t` holds its time per
    /// example, see [`Rollout::times`]).
    fn call(&self, k: usize, t: &'a [f32]) -> Denoise<'a> {
        Denoise {
            x: &self.trace.inputs[k],
            t,
            cond: self.guidance.cond,
            uncond: self.guidance.uncond,
            guidance: self.guidance.scale,
            detach_uncond: self.detach_uncond,
        }
    }

    /// The model time of evaluation `k`, once per example.
    fn times(&self, k: usize) -> Result<Vec<f32>> {
        let e = self
            .plan
            .evals
            .get(k)
            .ok_or_else(|| Error::Invalid(format!("evaluation {k} is not in the plan")))?;
        Ok(vec![e.t as f32; self.trace.inputs[k].shape[0]])
    }
}

/// Accumulate the parameter gradients of the trained evaluations `trained` under `adt` or
/// `drtune`: one `denoise_vjp` per evaluation with its output cotangent. Returns the adjoint.
pub fn backward_linear(
    model: &mut dyn Denoiser,
    r: Rollout<'_>,
    path: GradPath,
    trained: &[usize],
    g_final: &HostTensor,
) -> Result<Adjoint> {
    let adj = linear_adjoint(r.plan, path, g_final)?;
    for &k in trained {
        let t = r.times(k)?;
        if let Some(g) = &adj.outputs[k] {
            model.denoise_vjp(&r.call(k, &t), g, false)?;
        }
    }
    Ok(adj)
}

/// Reverse mode through the whole rollout with no stop-gradient: every evaluation is recomputed
/// with its output cotangent, accumulating parameter gradients and returning the input
/// cotangent, which flows on to the states and earlier outputs it was formed from.
pub fn full_backward(
    model: &mut dyn Denoiser,
    r: Rollout<'_>,
    g_final: &HostTensor,
) -> Result<Adjoint> {
    let plan = r.plan;
    let mut adj = Adjoint::start(plan, g_final);
    for j in (0..plan.steps.len()).rev() {
        let step = &plan.steps[j];
        if let Some(g) = adj.states[j + 1].clone() {
            adj.spread(&step.next, &g, |_, c| Some(c));
        }
        for &k in step.evals.iter().rev() {
            let Some(g) = adj.outputs[k].clone() else {
                continue;
            };
            let t = r.times(k)?;
            let gu = model
                .denoise_vjp(&r.call(k, &t), &g, true)?
                .ok_or_else(|| Error::Invalid("model returned no input cotangent".into()))?;
            adj.spread(&plan.evals[k].input, &gu, |_, c| Some(c));
            adj.inputs[k] = Some(gu);
        }
    }
    Ok(adj)
}

/// The state a plan evaluation's step starts from (x_{t_i} of that evaluation).
pub fn step_state_of(plan: &Plan, k: usize) -> Option<usize> {
    plan.steps.iter().position(|s| s.evals.contains(&k))
}

/// Euclidean norm.
pub fn l2(t: &HostTensor) -> f64 {
    t.data
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The K trained evaluations among `n`: equally spaced with a random offset, or uniformly at
/// random (sorted). All of them when K ≥ n.
pub fn pick_trained(
    n: usize,
    k: usize,
    random: bool,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<usize> {
    use rand::Rng;
    if k == 0 || n == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n).collect();
    }
    if random {
        let mut v = rand::seq::index::sample(rng, n, k).into_vec();
        v.sort_unstable();
        return v;
    }
    let stride = n as f64 / k as f64;
    let offset = rng.random::<f64>() * stride;
    (0..k)
        .map(|i| ((offset + i as f64 * stride) as usize).min(n - 1))
        .collect()
}
