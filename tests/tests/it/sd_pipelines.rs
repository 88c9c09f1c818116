//! The SD-family plugins end to end against diffusers on `shared/fixtures/diffusers-tiny`:
//! loaded through the plugin boundary (the three `cdylib`s loaded dynamically, like any user
//! plugin), the prompt encoded through the tokenizers, and the full sampling (the fixture's step count) of every
//! scheduler the fixture lists at guidance 1 and 4 — sampler plans from `adt-plugin-samplers`
//! executed by the tuner's rollout, starting from the stored initial latents (Euler-ancestral
//! replays the recorded noise) — compared step by step with the pipeline's latents, and the
//! decoded image of the full pipeline.

use std::path::PathBuf;

use adt_integration_tests::{build_plugins, lib_name};
use adt_plugin_api::{HostTensor, PlanRequest, SamplerPlugin};
use adt_plugin_host::{Model, check_library};
use adt_plugin_samplers::Builtin;
use adt_tuner::rollout::{self, Guidance};

fn fixture(family: &str) -> Option<PathBuf> {
    adt_integration_tests::diffusers_tiny(family)
}

struct Refs(safetensors::SafeTensors<'static>);

impl Refs {
    fn load(dir: &std::path::Path) -> Refs {
        let bytes: &'static [u8] = Box::leak(
            std::fs::read(dir.join("reference.safetensors"))
                .unwrap()
                .into_boxed_slice(),
        );
        Refs(safetensors::SafeTensors::deserialize(bytes).unwrap())
    }
    fn get(&self, name: &str) -> HostTensor {
        let t = self
            .0
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference lacks {name}"));
        HostTensor {
            shape: t.shape().to_vec(),
            data: t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }
    fn has(&self, name: &str) -> bool {
        self.0.tensor(name).is_ok()
    }
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let m = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    d / m
}

fn scale(t: &HostTensor, k: f64) -> Vec<f32> {
    t.data.iter().map(|v| (*v as f64 * k) as f32).collect()
}

fn our_name(key: &str) -> &str {
    match key {
        "ddim" => "ddim",
        "dpmpp_2m" => "dpm++2m",
        "euler" => "euler",
        "euler_a" => "euler-a",
        "flow_euler" => "flow-euler",
        other => panic!("unknown fixture scheduler {other}"),
    }
}

fn check_family(family: &str) {
    let Some(dir) = fixture(family) else { return };
    let refs = Refs::load(&dir);
    let lib = build_plugins().join(lib_name(&format!("adt-plugin-{family}")));
    let info = check_library(&lib).unwrap();
    assert_eq!(info.name, family);
    let text: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json"))
            .unwrap()
            .replace("-Infinity", "null"),
    )
    .unwrap();
    // Image size and step count as the fixture's pipeline call used them.
    let size = |k: &str| {
        text["sampling"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("sampling.{k}"))
    };
    let (height, width) = (size("height"), size("width"));
    let steps = size("num_inference_steps") as usize;
    let cfg =
        serde_json::json!({"weights": dir.display().to_string(), "height": height, "width": width});
    let mut model = Model::create(&info, &cfg).unwrap();
    let desc = model.describe().unwrap();
    let init = refs.get("sample.init_latent");
    assert_eq!(&init.shape[1..], &desc.latent_shape);
    let prompt = text["prompt"].as_str().unwrap().to_string();
    let cond = model.encode_prompts(&[prompt]).unwrap();
    let uncond = model.encode_prompts(&[String::new()]).unwrap();
    let mut checked = 0;
    for key in text["schedulers"].as_object().unwrap().keys() {
        let req = PlanRequest {
            sampler: our_name(key).into(),
            steps,
            schedule: desc.schedule.clone(),
            parameterization: desc.parameterization,
            spacing: (!desc.sampler_default_spacing).then_some(desc.default_spacing),
            steps_offset: desc.steps_offset,
            start_index: 0,
            eta: 0.0,
            set_alpha_to_one: desc.set_alpha_to_one,
            img2img: false,
        };
        let plan = Builtin::plan(&req).unwrap();
        for gs in [1.0f32, 4.0] {
            let base = format!("sample.{key}.gs{gs:.0}");
            let noises: Vec<HostTensor> = if plan.noise_draws > 0 {
                let n = refs.get(&format!("{base}.noise"));
                let per: usize = n.shape[1..].iter().product();
                (0..plan.noise_draws)
                    .map(|i| HostTensor {
                        shape: n.shape[1..].to_vec(),
                        data: n.data[i * per..(i + 1) * per].to_vec(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let g = Guidance {
                cond,
                uncond: Some(uncond),
                scale: gs,
            };
            let trace = rollout::run_with_noise(
                &mut model,
                &plan,
                &init.shape,
                None,
                &init,
                noises,
                g,
                |_, _| {},
            )
            .unwrap();
            // Our states are variance-preserving; the k-diffusion samplers' latents are
            // x / α = x·√(σ²+1).
            let traj = refs.get(&format!("{base}.trajectory"));
            let per: usize = traj.shape[1..].iter().product();
            for i in 0..steps {
                let k = plan
                    .sigmas
                    .as_ref()
                    .filter(|_| key.starts_with("euler"))
                    .map_or(1.0, |s| (s[i + 1] * s[i + 1] + 1.0).sqrt());
                let e = rel(
                    &scale(&trace.states[i + 1], k),
                    &traj.data[i * per..(i + 1) * per],
                );
                assert!(e <= 1e-5, "{family} {base} step {i}: rel {e:.2e}");
            }
            let e = rel(
                &trace.result().data,
                &refs.get(&format!("{base}.latents")).data,
            );
            eprintln!("{family} {base}: final latents rel {e:.2e}");
            assert!(e <= 1e-5, "{family} {base}: final rel {e:.2e}");
            let pimg = format!("pipeline.{key}.gs4.image");
            if gs == 4.0 && refs.has(&pimg) {
                let img = model.decode(trace.result()).unwrap();
                let post: Vec<f32> = img
                    .data
                    .iter()
                    .map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
                    .collect();
                let e = rel(&post, &refs.get(&pimg).data);
                eprintln!("{family} {pimg}: rel {e:.2e}");
                assert!(e <= 2e-5, "{family} {pimg}: rel {e:.2e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "{family}: no sampler checked");
}

#[test]
fn sd15_samples_like_diffusers_with_every_scheduler() {
    check_family("sd15");
}

#[test]
fn sdxl_samples_like_diffusers_with_every_scheduler() {
    check_family("sdxl");
}

#[test]
fn sd3_samples_like_diffusers_with_flow_euler() {
    check_family("sd3");
}
