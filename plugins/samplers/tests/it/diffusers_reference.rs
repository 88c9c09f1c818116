//! Timesteps, sigmas and initial noise scale of every sampler against what diffusers itself
//! produced for the Stable Diffusion scheduler configurations (scaled-linear betas
//! 0.00085–0.012, 1000 steps, steps_offset 1) and SD3's flow-matching scheduler (shift 3):
//! `shared/fixtures/diffusers-tiny/*/reference.json` (`schedulers.*`), with the training
//! schedule's ᾱ read from the same fixture's `reference.safetensors`.

use std::path::PathBuf;

use adt_plugin_api::{NoiseSchedule, Parameterization, PlanRequest, SamplerPlugin, Spacing};
use adt_plugin_samplers::Builtin;
use serde_json::Value;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    let dir = dir.join("diffusers-tiny");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: diffusers reference fixtures not found at {} (set ADT_FIXTURES); sampler parity NOT checked",
            dir.display()
        );
        None
    }
}

fn alphas_cumprod(dir: &std::path::Path) -> Vec<f64> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("sched.alphas_cumprod").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(ours: &[f64], theirs: &[f64], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: {ours:?} vs {theirs:?}");
    for (a, b) in ours.iter().zip(theirs) {
        // diffusers stores these as float32: relative 1e-6 plus float32 rounding.
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0) + 1e-7,
            "{what}: ours {ours:?}\ndiffusers {theirs:?}"
        );
    }
}

fn our_name(diffusers_key: &str) -> &str {
    match diffusers_key {
        "ddim" => "ddim",
        "dpmpp_2m" => "dpm++2m",
        "euler" => "euler",
        "euler_a" => "euler-a",
        "flow_euler" => "flow-euler",
        other => panic!("fixture has a scheduler `{other}` this test does not know"),
    }
}

#[test]
fn timesteps_and_sigmas_match_diffusers() {
    let Some(root) = fixtures() else { return };
    let mut checked = 0;
    for family in ["sd15", "sdxl", "sd3"] {
        let dir = root.join(family);
        // Python's json writes -Infinity (diffusers' lambda_min_clipped); JSON has no such token.
        let text = std::fs::read_to_string(dir.join("reference.json"))
            .unwrap()
            .replace("-Infinity", "null");
        let reference: Value = serde_json::from_str(&text).unwrap();
        for (key, s) in reference["schedulers"].as_object().unwrap() {
            let cfg = &s["effective_config"];
            let steps = floats(&s["timesteps"]).len();
            let schedule = if key == "flow_euler" {
                NoiseSchedule::Flow {
                    num_train_timesteps: cfg["num_train_timesteps"].as_u64().unwrap() as usize,
                    shift: cfg["shift"].as_f64().unwrap(),
                }
            } else {
                NoiseSchedule::Discrete {
                    alphas_cumprod: alphas_cumprod(&dir),
                }
            };
            let spacing = match cfg["timestep_spacing"].as_str() {
                Some("leading") => Some(Spacing::Leading),
                Some("trailing") => Some(Spacing::Trailing),
                Some("linspace") => Some(Spacing::Linspace),
                _ => None,
            };
            let parameterization = match cfg["prediction_type"].as_str() {
                Some("v_prediction") => Parameterization::V,
                Some("epsilon") => Parameterization::Eps,
                _ => Parameterization::Flow,
            };
            let req = PlanRequest {
                sampler: our_name(key).into(),
                steps,
                schedule,
                parameterization,
                spacing,
                steps_offset: cfg["steps_offset"].as_u64().unwrap_or(0) as usize,
                start_index: 0,
                eta: 0.0,
                set_alpha_to_one: cfg["set_alpha_to_one"].as_bool(),
                img2img: false,
            };
            let plan = Builtin::plan(&req).unwrap_or_else(|e| panic!("{family}/{key}: {e}"));
            let what = format!("{family}/{key}");
            close(
                &plan.timesteps,
                &floats(&s["timesteps"]),
                &format!("{what} timesteps"),
            );
            let eval_times: Vec<f64> = plan.evals.iter().map(|e| e.t).collect();
            close(
                &eval_times,
                &floats(&s["timesteps"]),
                &format!("{what} evaluation times"),
            );
            if let Some(sig) = s.get("sigmas").filter(|v| !v.is_null()) {
                close(
                    plan.sigmas.as_deref().unwrap(),
                    &floats(sig),
                    &format!("{what} sigmas"),
                );
            }
            // init_noise_sigma: the VP start scale is α(σ0)·init_noise_sigma for the
            // k-diffusion samplers and init_noise_sigma itself (1) for the others.
            if let Some(init) = s["init_noise_sigma"].as_f64() {
                let alpha0 = plan.evals[0].alpha;
                let ours = if key.starts_with("euler") {
                    plan.start_sigma / alpha0
                } else {
                    plan.start_sigma
                };
                close(&[ours], &[init], &format!("{what} init_noise_sigma"));
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 7,
        "expected 4 sd15 + 2 sdxl + 1 sd3 schedulers; the fixture changed"
    );
}
