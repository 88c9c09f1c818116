//! The gradient paths of DESIGN §1.3, shown numerically: under `adt` the gradient reaching every
//! state equals ∂L/∂x̂0; under `drtune` it is (∏ a_j)·∂L/∂x̂0 (≈ α_end/α_{t_i}, growing like
//! 1/√ᾱ); `full` equals autograd through the unrolled sampler on the tiny model.

use adt_plugin_api::sdk::{DenoiseArgs, ModelPlugin, SamplerPlugin};
use adt_plugin_api::{HostTensor, NoiseSchedule, Parameterization, Plan, PlanRequest, Src};
use adt_plugin_host::Denoise;
use adt_tuner::paths::{Denoiser, GradPath, Rollout, full_backward, linear_adjoint};
use adt_tuner::rollout::{Guidance, Trace};

/// SD's scaled-linear schedule.
fn sd_schedule() -> Vec<f64> {
    let (b0, b1) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0;
    (0..1000)
        .map(|i| {
            let b = (b0 + (b1 - b0) * i as f64 / 999.0).powi(2);
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

fn plan(
    sampler: &str,
    steps: usize,
    start: usize,
    schedule: Vec<f64>,
    param: Parameterization,
) -> Plan {
    adt_plugin_samplers::Builtin::plan(&PlanRequest {
        sampler: sampler.into(),
        steps,
        schedule: NoiseSchedule::Discrete {
            alphas_cumprod: schedule,
        },
        parameterization: param,
        spacing: None,
        steps_offset: 0,
        start_index: start,
        eta: 0.0,
        set_alpha_to_one: Some(true),
        img2img: true,
    })
    .unwrap()
}

fn prev_state_coef(plan: &Plan, j: usize) -> f64 {
    plan.steps[j]
        .next
        .iter()
        .filter(|t| t.src == Src::State(j))
        .map(|t| t.coef)
        .sum()
}

#[test]
fn adt_gives_every_step_the_same_gradient_and_drtune_the_product_of_coefficients() {
    for sampler in ["ddim", "dpm++2m"] {
        for start in [0, 3] {
            let p = plan(sampler, 10, start, sd_schedule(), Parameterization::Eps);
            let m = p.steps.len();
            let g = HostTensor {
                shape: vec![1, 4],
                data: vec![0.5, -1.0, 2.0, 0.25],
            };
            let adt = linear_adjoint(&p, GradPath::Adt, &g).unwrap();
            let dr = linear_adjoint(&p, GradPath::Drtune, &g).unwrap();
            for i in 0..=m {
                assert_eq!(
                    adt.states[i].as_ref().unwrap().data,
                    g.data,
                    "{sampler} adt state {i}"
                );
            }
            // drtune is the transpose of the plan's linear map with the model outputs held fixed
            // (stop-gradient on the network inputs): ⟨∂L/∂x_i, v⟩ = ⟨g, δx̂0(v)⟩ for a
            // perturbation v of state i propagated forward.
            for i in 0..=m {
                let v = [0.3f64, -0.7, 1.1, 0.2];
                let mut ds: Vec<[f64; 4]> = vec![[0.0; 4]; m + 1];
                ds[i] = v;
                for j in i..m {
                    let mut acc = [0.0; 4];
                    for t in &p.steps[j].next {
                        if let Src::State(q) = t.src {
                            for c in 0..4 {
                                acc[c] += t.coef * ds[q][c];
                            }
                        }
                    }
                    ds[j + 1] = acc;
                }
                let lhs: f64 = dr.states[i]
                    .as_ref()
                    .unwrap()
                    .data
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| *a as f64 * b)
                    .sum();
                let rhs: f64 = g.data.iter().zip(&ds[m]).map(|(a, b)| *a as f64 * b).sum();
                assert!(
                    (lhs - rhs).abs() <= 1e-5 * rhs.abs().max(1.0),
                    "{sampler} drtune state {i}: {lhs} vs {rhs}"
                );
            }
            // Where every step combines only the previous state (DDIM; DPM++2M's first step),
            // that is the product of the state coefficients a_j.
            let mut prod = 1.0f64;
            for i in (0..m).rev() {
                if p.steps[i..].iter().enumerate().any(|(o, s)| {
                    s.next
                        .iter()
                        .any(|t| matches!(t.src, Src::State(q) if q != i + o))
                }) {
                    assert_eq!(
                        sampler, "dpm++2m",
                        "only the multistep solver references older states"
                    );
                    break;
                }
                prod *= prev_state_coef(&p, i);
                let got = &dr.states[i].as_ref().unwrap().data;
                for (a, b) in got.iter().zip(&g.data) {
                    let want = (*b as f64 * prod) as f32;
                    assert!(
                        (a - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{sampler} drtune ∏a at state {i}"
                    );
                }
            }
            // The DDIM product telescopes: ∏ a_j = α_end/α_{t_i} (eps-DDIM's state coefficient is
            // √ᾱ_prev/√ᾱ_t) — the 1/√ᾱ growth ADT removes.
            if sampler == "ddim" {
                let mut prod = 1.0;
                for i in (0..m).rev() {
                    prod *= prev_state_coef(&p, i);
                    let want = p.steps[m - 1].alpha_next / p.evals[i].alpha;
                    assert!(
                        (prod - want).abs() < 1e-9 * want,
                        "step {i}: {prod} vs {want}"
                    );
                }
                let first = p.steps[m - 1].alpha_next / p.evals[0].alpha;
                eprintln!(
                    "ddim:10 start {start}: drtune gradient at the first step is {first:.1}× adt's"
                );
                assert!(first > 1.0);
            }
            // The output cotangents under adt: the output's coefficients in later steps times g.
            for (k, out) in adt.outputs.iter().enumerate() {
                let coef: f64 = p
                    .steps
                    .iter()
                    .flat_map(|s| &s.next)
                    .filter(|t| t.src == Src::Out(k))
                    .map(|t| t.coef)
                    .sum();
                let got = out.as_ref().map_or(0.0, |o| o.data[1] as f64);
                assert!(
                    (got - coef * g.data[1] as f64).abs() < 1e-5 * coef.abs().max(1.0),
                    "{sampler} output {k}"
                );
            }
        }
    }
}

/// The tiny model called directly (not through the C ABI), so its gradients can be read.
struct Direct(adt_plugin_tiny::TinyModel);

impl Denoiser for Direct {
    fn denoise(&mut self, d: &Denoise<'_>) -> adt_tuner::Result<HostTensor> {
        let args = args(d);
        Ok(self.0.denoise(&args).unwrap())
    }
    fn denoise_vjp(
        &mut self,
        d: &Denoise<'_>,
        c: &HostTensor,
        want: bool,
    ) -> adt_tuner::Result<Option<HostTensor>> {
        let args = args(d);
        Ok(self.0.denoise_vjp(&args, c.view(), want).unwrap())
    }
}

fn args<'a>(d: &'a Denoise<'a>) -> DenoiseArgs<'a> {
    DenoiseArgs {
        x: d.x.view(),
        t: d.t,
        cond: d.cond.0,
        uncond: d.uncond.map(|c| c.0),
        guidance: d.guidance,
        detach_uncond: d.detach_uncond,
    }
}

#[test]
fn full_path_equals_autograd_through_the_unrolled_sampler() {
    use candle_core::{Device, Tensor, Var};
    // The pretrained weights: every layer carries gradient (a random init zeroes the output
    // layer, which would leave the inner layers' gradients at zero).
    let cfg = serde_json::json!({});
    let mut tiny = adt_plugin_tiny::TinyModel::create(&cfg).unwrap();
    let desc = tiny.describe().unwrap();
    let NoiseSchedule::Discrete { alphas_cumprod } = desc.schedule.clone() else {
        panic!()
    };
    let p = plan("ddim", 4, 1, alphas_cumprod, desc.parameterization);
    let prompt = "a red circle".to_string();
    let cond = tiny.encode_prompts(std::slice::from_ref(&prompt)).unwrap();
    let shape = vec![1, 3, 32, 32];
    let n: usize = shape.iter().product();
    let s0: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.8)
        .collect();
    let w: Vec<f32> = (0..n)
        .map(|i| (i * 104729 % 997) as f32 / 498.5 - 1.0)
        .collect();
    let g_final = HostTensor {
        shape: shape.clone(),
        data: w.clone(),
    };

    // Forward with the tuner's executor semantics, then the full backward through `Direct`.
    let mut direct = Direct(tiny);
    let guidance = Guidance {
        cond: adt_plugin_host::Cond(cond),
        uncond: None,
        scale: 1.0,
    };
    let trace = run_plan(
        &mut direct,
        &p,
        HostTensor {
            shape: shape.clone(),
            data: s0.clone(),
        },
        &guidance,
    );
    direct.0.zero_grad().unwrap();
    let adj = full_backward(
        &mut direct,
        Rollout {
            plan: &p,
            trace: &trace,
            guidance: &guidance,
            detach_uncond: false,
        },
        &g_final,
    )
    .unwrap();

    // Autograd reference: the same plan unrolled as one candle graph.
    let dev = Device::Cpu;
    let tiny = &direct.0;
    let x0 = Var::from_vec(s0.clone(), shape.clone(), &dev).unwrap();
    let ids = Tensor::from_vec(
        adt_plugin_tiny::tokenizer::tokenize(&prompt),
        (1, adt_plugin_tiny::tokenizer::MAX_TOKENS),
        &dev,
    )
    .unwrap();
    let text = adt_plugin_tiny::net::text_embedding(tiny.params(), &ids).unwrap();
    let lin = |terms: &[adt_plugin_api::Term], st: &[Tensor], out: &[Tensor]| -> Tensor {
        let mut acc: Option<Tensor> = None;
        for t in terms {
            let v = match t.src {
                Src::State(i) => &st[i],
                Src::Out(k) => &out[k],
                Src::Noise(_) => panic!("deterministic plan"),
            };
            let v = (v * t.coef).unwrap();
            acc = Some(match acc {
                Some(a) => (a + v).unwrap(),
                None => v,
            });
        }
        acc.unwrap()
    };
    let mut st = vec![x0.as_tensor().clone()];
    let mut out: Vec<Tensor> = Vec::new();
    for step in &p.steps {
        for &k in &step.evals {
            let e = &p.evals[k];
            let u = lin(&e.input, &st, &out);
            let t = Tensor::from_vec(vec![e.t as f32], 1, &dev).unwrap();
            out.push(
                adt_plugin_tiny::net::forward(tiny.params(), tiny.config(), &u, &t, &text).unwrap(),
            );
        }
        st.push(lin(&step.next, &st, &out));
    }
    let wt = Tensor::from_vec(w, shape.clone(), &dev).unwrap();
    let loss = (st.last().unwrap() * &wt).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let close = |a: &[f32], b: &[f32], what: &str| {
        let scale = b.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-6);
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("{what}: max |Δ| / max |ref| = {:.2e}", max / scale);
        assert!(max <= 1e-3 * scale, "{what}: {max} vs scale {scale}");
    };
    let gs0 = grads
        .get(x0.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    close(&adj.states[0].as_ref().unwrap().data, &gs0, "∂L/∂x_start");
    let mut checked = 0;
    for (name, var) in &tiny.params().vars {
        let Some(r) = grads.get(var.as_tensor()) else {
            continue;
        };
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ours = tiny.grad(name).expect("gradient accumulated");
        if r.iter().all(|v| *v == 0.0) {
            continue;
        }
        close(&ours.data, &r, name);
        checked += 1;
    }
    assert!(checked > 10, "{checked} parameters compared");
}

fn run_plan(model: &mut dyn Denoiser, p: &Plan, start: HostTensor, g: &Guidance) -> Trace {
    let lin =
        |terms: &[adt_plugin_api::Term], st: &[HostTensor], out: &[HostTensor]| -> HostTensor {
            let mut acc = vec![0f64; st[0].data.len()];
            for t in terms {
                let v = match t.src {
                    Src::State(i) => &st[i],
                    Src::Out(k) => &out[k],
                    Src::Noise(_) => panic!(),
                };
                for (a, x) in acc.iter_mut().zip(&v.data) {
                    *a += t.coef * *x as f64;
                }
            }
            HostTensor {
                shape: st[0].shape.clone(),
                data: acc.into_iter().map(|v| v as f32).collect(),
            }
        };
    let mut tr = Trace {
        states: vec![start],
        inputs: vec![],
        outputs: vec![],
        noises: vec![],
    };
    for step in &p.steps {
        for &k in &step.evals {
            let e = &p.evals[k];
            let u = lin(&e.input, &tr.states, &tr.outputs);
            let t = vec![e.t as f32; u.shape[0]];
            let o = model
                .denoise(&Denoise {
                    x: &u,
                    t: &t,
                    cond: g.cond,
                    uncond: g.uncond,
                    guidance: g.scale,
                    detach_uncond: false,
                })
                .unwrap();
            tr.inputs.push(u);
            tr.outputs.push(o);
        }
        let next = lin(&step.next, &tr.states, &tr.outputs);
        tr.states.push(next);
    }
    tr
}
