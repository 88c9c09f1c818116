//! The sampler list and the planner agree: every listed sampler plans on the schedules it
//! lists and is refused (with the samplers that do fit) on the others, and a name the list
//! lacks is refused as unknown, naming exactly the listed samplers.

use adt_plugin_api::{NoiseSchedule, Parameterization, PlanRequest, SamplerPlugin};
use adt_plugin_samplers::Builtin;

fn request(sampler: &str, schedule: NoiseSchedule, param: Parameterization) -> PlanRequest {
    PlanRequest {
        sampler: sampler.into(),
        steps: 5,
        schedule,
        parameterization: param,
        spacing: None,
        steps_offset: 0,
        start_index: 0,
        eta: 0.0,
        set_alpha_to_one: None,
        img2img: false,
    }
}

fn discrete() -> NoiseSchedule {
    // SD's scaled-linear betas.
    let n = 1000;
    let (b0, b1) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut ac = Vec::with_capacity(n);
    let mut prod = 1.0;
    for i in 0..n {
        let b = b0 + (b1 - b0) * i as f64 / (n - 1) as f64;
        prod *= 1.0 - b * b;
        ac.push(prod);
    }
    NoiseSchedule::Discrete { alphas_cumprod: ac }
}

fn flow() -> NoiseSchedule {
    NoiseSchedule::Flow {
        num_train_timesteps: 1000,
        shift: 3.0,
    }
}

#[test]
fn every_listed_sampler_plans_and_every_plannable_name_is_listed() {
    let list = Builtin::list();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    // The samplers the README documents are all there.
    for want in [
        "ddim",
        "ddpm",
        "euler",
        "euler-a",
        "heun",
        "dpm++2m",
        "unipc",
        "flow-euler",
    ] {
        assert!(names.contains(&want), "`{want}` missing from {names:?}");
    }
    let mut planned = 0;
    for s in &list {
        assert!(!s.schedules.is_empty(), "{} lists no schedule", s.name);
        for (kind, schedule, param) in [
            ("discrete", discrete(), Parameterization::Eps),
            ("flow", flow(), Parameterization::Flow),
        ] {
            let r = Builtin::plan(&request(&s.name, schedule, param));
            if s.schedules.iter().any(|k| k == kind) {
                let plan = r.unwrap_or_else(|e| panic!("{} on {kind}: {}", s.name, e.0));
                assert!(
                    !plan.evals.is_empty() && !plan.steps.is_empty(),
                    "{}",
                    s.name
                );
                assert_eq!(
                    plan.steps.len(),
                    5,
                    "{}: one step per requested step",
                    s.name
                );
                planned += 1;
            } else {
                let e = r
                    .err()
                    .unwrap_or_else(|| panic!("{} planned on {kind}", s.name))
                    .0;
                assert!(e.contains(&s.name), "{e}");
                // The refusal names samplers that do fit this schedule, each one listed.
                let fits: Vec<&str> = list
                    .iter()
                    .filter(|o| o.schedules.iter().any(|k| k == kind))
                    .map(|o| o.name.as_str())
                    .collect();
                assert!(fits.iter().all(|f| e.contains(f)), "{e}");
            }
        }
    }
    assert_eq!(
        planned,
        list.len(),
        "each sampler plans on one schedule kind"
    );
    // Vice versa: a name that is not listed is not planned, and the error lists exactly the
    // listed names.
    for bad in ["unipc2", "DDIM", "lcm", ""] {
        let e = Builtin::plan(&request(bad, discrete(), Parameterization::Eps))
            .err()
            .unwrap_or_else(|| panic!("`{bad}` planned but not listed"))
            .0;
        let avail = e
            .split("(available: ")
            .nth(1)
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{e}"));
        assert_eq!(avail.split(", ").collect::<Vec<_>>(), names, "{e}");
    }
}
