//! Executes a sampler [`Plan`] against a model: the forward rollout (text-to-image or
//! image-to-image from a start index), with classifier-free guidance.

use adt_plugin_api::{HostTensor, Plan, Src, Term};
use adt_plugin_host::{Cond, Denoise, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Error, Result};

/// Conditioning of a rollout.
#[derive(Debug, Clone, Copy)]
pub struct Guidance {
    /// Prompts (B or 1).
    pub cond: Cond,
    /// Empty-prompt handle for classifier-free guidance (None: no guidance).
    pub uncond: Option<Cond>,
    /// Guidance scale.
    pub scale: f32,
}

/// What a rollout keeps: every state and every model output (for gradient paths).
#[derive(Debug, Clone)]
pub struct Trace {
    /// States, `states[0]` the start, the last the result.
    pub states: Vec<HostTensor>,
    /// Model inputs, one per evaluation.
    pub inputs: Vec<HostTensor>,
    /// Model outputs, one per evaluation.
    pub outputs: Vec<HostTensor>,
    /// Noise draws referenced by the plan.
    pub noises: Vec<HostTensor>,
}

impl Trace {
    /// The final state (the sample, in latent space).
    pub fn result(&self) -> &HostTensor {
        self.states
            .last()
            .expect("a trace always holds the start state")
    }
}

/// Standard-normal noise of a shape from a seeded RNG.
pub fn gaussian(shape: &[usize], rng: &mut ChaCha8Rng) -> HostTensor {
    let n = shape.iter().product();
    HostTensor {
        shape: shape.to_vec(),
        data: (0..n).map(|_| StandardNormal.sample(rng)).collect(),
    }
}

fn combine(
    terms: &[Term],
    states: &[HostTensor],
    outputs: &[HostTensor],
    noises: &[HostTensor],
) -> Result<HostTensor> {
    let first = terms
        .first()
        .ok_or_else(|| Error::Invalid("empty linear combination in plan".into()))?;
    let pick = |src: Src| -> Result<&HostTensor> {
        let (v, i, what) = match src {
            Src::State(i) => (states.get(i), i, "state"),
            Src::Out(i) => (outputs.get(i), i, "output"),
            Src::Noise(i) => (noises.get(i), i, "noise"),
        };
        v.ok_or_else(|| Error::Invalid(format!("plan references {what} {i} before it exists")))
    };
    let shape = pick(first.src)?.shape.clone();
    let mut acc = vec![0f64; pick(first.src)?.len()];
    for t in terms {
        let v = pick(t.src)?;
        if v.shape != shape {
            return Err(Error::Invalid(
                "plan combines tensors of different shapes".into(),
            ));
        }
        for (a, x) in acc.iter_mut().zip(&v.data) {
            *a += t.coef * *x as f64;
        }
    }
    Ok(HostTensor {
        shape,
        data: acc.into_iter().map(|v| v as f32).collect(),
    })
}

/// Run a plan. `x0` is the clean latent for image-to-image starts (None: pure noise; then
/// `start_alpha` must be ~0). `noise` is the start noise (drawn from `rng` when None);
/// per-step noise is drawn from `rng`.
#[expect(
    clippy::too_many_arguments,
    reason = "a rollout has this many independent inputs"
)]
pub fn run(
    model: &mut Model,
    plan: &Plan,
    shape: &[usize],
    x0: Option<&HostTensor>,
    noise: Option<&HostTensor>,
    guidance: Guidance,
    rng: &mut ChaCha8Rng,
    on_eval: impl FnMut(usize, usize),
) -> Result<Trace> {
    let eps = match noise {
        Some(n) => n.clone(),
        None => gaussian(shape, rng),
    };
    let noises: Vec<HostTensor> = (0..plan.noise_draws)
        .map(|_| gaussian(shape, rng))
        .collect();
    run_with_noise(model, plan, shape, x0, &eps, noises, guidance, on_eval)
}

/// Run a plan with given start noise and per-step noise draws (`plan.noise_draws` of them),
/// e.g. to replay a reference implementation's random stream.
#[expect(
    clippy::too_many_arguments,
    reason = "a rollout has this many independent inputs"
)]
pub fn run_with_noise(
    model: &mut Model,
    plan: &Plan,
    shape: &[usize],
    x0: Option<&HostTensor>,
    eps: &HostTensor,
    noises: Vec<HostTensor>,
    guidance: Guidance,
    mut on_eval: impl FnMut(usize, usize),
) -> Result<Trace> {
    if eps.shape != shape {
        return Err(Error::Invalid(format!(
            "initial noise has shape {:?}, expected {shape:?}",
            eps.shape
        )));
    }
    if noises.len() != plan.noise_draws || noises.iter().any(|n| n.shape != shape) {
        return Err(Error::Invalid(format!(
            "the plan needs {} noise draws of shape {shape:?}",
            plan.noise_draws
        )));
    }
    let mut start = eps.clone();
    for v in &mut start.data {
        *v *= plan.start_sigma as f32;
    }
    if let Some(x0) = x0 {
        if x0.shape != shape {
            return Err(Error::Invalid(format!(
                "x0 has shape {:?}, expected {shape:?}",
                x0.shape
            )));
        }
        for (s, x) in start.data.iter_mut().zip(&x0.data) {
            *s += plan.start_alpha as f32 * x;
        }
    }
    let mut trace = Trace {
        states: vec![start],
        inputs: Vec::new(),
        outputs: Vec::new(),
        noises,
    };
    let b = shape[0];
    for step in &plan.steps {
        for &k in &step.evals {
            let e = plan
                .evals
                .get(k)
                .ok_or_else(|| Error::Invalid(format!("plan step references eval {k}")))?;
            if k != trace.outputs.len() {
                return Err(Error::Invalid(
                    "plan evaluations are not in execution order".into(),
                ));
            }
            let input = combine(&e.input, &trace.states, &trace.outputs, &trace.noises)?;
            let t = vec![e.t as f32; b];
            let out = model.denoise(&Denoise {
                x: &input,
                t: &t,
                cond: guidance.cond,
                uncond: guidance.uncond,
                guidance: guidance.scale,
                detach_uncond: false,
            })?;
            if out.shape != input.shape {
                return Err(Error::Invalid(format!(
                    "model returned shape {:?} for input {:?}",
                    out.shape, input.shape
                )));
            }
            trace.inputs.push(input);
            trace.outputs.push(out);
            on_eval(trace.outputs.len(), plan.evals.len());
        }
        let next = combine(&step.next, &trace.states, &trace.outputs, &trace.noises)?;
        trace.states.push(next);
    }
    Ok(trace)
}

/// A fresh RNG for a seed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
