//! The mechanism the paper claims: the norm of the gradient reaching each trained step of a
//! rollout, under ADT's path (equal at every step) and DRTune's (the product of the linear
//! state coefficients, ≈ 1/√ᾱ_t for an ε-prediction DDIM). Computed with the tuner's own
//! adjoint ([`adt_tuner::paths::linear_adjoint`]) on the train sampler's real plan, for the
//! model's parameterisation and, for comparison, ε-prediction on the same schedule: the
//! growth depends on the parameterisation (for v-prediction the coefficients are ≈ 1).

use adt_plugin_api::{HostTensor, ModelDescription, Parameterization};
use adt_plugin_host::Registry;
use adt_tuner::paths::{GradPath, l2, linear_adjoint};

use crate::sampling::{self, SamplerSpec};

/// The gradient norm reaching one step under one path (unit cotangent on the final image).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GradNorm {
    pub model: String,
    pub sampler: String,
    /// Written as the ABI names it (`eps`, `v`, `flow`).
    pub parameterization: Parameterization,
    /// `adt` or `drtune`.
    pub path: GradPath,
    /// Step index (0: the first, noisiest step).
    pub step: usize,
    /// Model time of the step's first evaluation.
    pub t: f64,
    /// ᾱ (α²) of that evaluation's input.
    pub alpha_bar: f64,
    /// ‖∂L/∂x_step‖ for ‖∂L/∂x̂0‖ = 1.
    pub norm: f64,
}

/// The serde name of a unit variant (`eps`, `drtune`): the names the CSV and the ABI use.
pub fn name(x: &impl serde::Serialize) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Norms for the model's parameterisation and ε-prediction (if different), both paths.
pub fn grad_norms(
    reg: &Registry,
    model: &str,
    desc: &ModelDescription,
    sampler: &SamplerSpec,
) -> anyhow::Result<Vec<GradNorm>> {
    let mut params = vec![desc.parameterization];
    if desc.parameterization != Parameterization::Eps
        && desc.parameterization != Parameterization::Flow
    {
        params.push(Parameterization::Eps);
    }
    let mut out = Vec::new();
    for p in params {
        let mut d = desc.clone();
        d.parameterization = p;
        let plan = sampling::plan(reg, &d, sampler, None, None)?;
        let g = HostTensor {
            shape: vec![1],
            data: vec![1.0],
        };
        for path in [GradPath::Adt, GradPath::Drtune] {
            let adj = linear_adjoint(&plan, path, &g)?;
            for (i, step) in plan.steps.iter().enumerate() {
                let Some(e) = step.evals.first().map(|&k| &plan.evals[k]) else {
                    continue;
                };
                let norm = adj.states[i].as_ref().map_or(0.0, l2);
                out.push(GradNorm {
                    model: model.into(),
                    sampler: sampler.to_string(),
                    parameterization: p,
                    path,
                    step: i,
                    t: e.t,
                    alpha_bar: e.alpha * e.alpha,
                    norm,
                });
            }
        }
    }
    Ok(out)
}

/// Write the norms as CSV.
pub fn write_csv(rows: &[GradNorm], path: &std::path::Path) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ADT: 1 at every step. DRTune with ε-prediction DDIM: x_{t−1} = √ᾱ_{t−1}/√ᾱ_t · x_t + c·ε̂,
    /// so the product of the state coefficients from step i to the end telescopes to
    /// √ᾱ_final/√ᾱ_i = 1/√ᾱ_i (diffusers' DDIM with set_alpha_to_one) — the closed form.
    #[test]
    fn adt_is_flat_and_drtune_grows_like_one_over_sqrt_alpha_bar() {
        // The samplers linked in (a unit test has no plugin libraries beside it).
        let reg = adt_plugin_host::Registry::with_builtins(&[
            adt_plugin_tiny::header,
            adt_plugin_samplers::header,
        ])
        .unwrap();
        let m = crate::engine::settings::ModelSpec::new(
            "tiny",
            crate::engine::settings::DeviceSpec::Cpu,
        )
        .open(&reg)
        .unwrap();
        let desc = m.describe().unwrap();
        let spec: SamplerSpec = "ddim:10".parse().unwrap();
        let rows = grad_norms(&reg, "tiny", &desc, &spec).unwrap();
        use GradPath::{Adt, Drtune};
        use Parameterization::{Eps, V};
        let pick = |param: Parameterization, path: GradPath| -> Vec<&GradNorm> {
            rows.iter()
                .filter(|r| r.parameterization == param && r.path == path)
                .collect()
        };
        assert_eq!(pick(Eps, Adt).len(), 10);
        for r in pick(Eps, Adt).into_iter().chain(pick(V, Adt)) {
            assert!((r.norm - 1.0).abs() < 1e-6, "{r:?}");
        }
        let eps = pick(Eps, Drtune);
        for r in &eps {
            let want = 1.0 / r.alpha_bar.sqrt();
            assert!((r.norm - want).abs() <= 1e-4 * want, "{r:?} vs {want}");
        }
        assert!(
            eps[0].norm > 10.0,
            "the noisiest step gets ≫ 1: {}",
            eps[0].norm
        );
        // v-prediction: the state coefficients are cos(θ_prev − θ) ≤ 1, so no growth.
        for r in pick(V, Drtune) {
            assert!(r.norm <= 1.0 + 1e-6 && r.norm > 0.5, "{r:?}");
        }
    }
}
