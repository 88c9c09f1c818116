//! `adt-bench plugins check --conformance` on every plugin the project ships and on two that
//! break the contract: the built-ins pass every check, a planted defect fails exactly the
//! checks that test it, and a panicking inference-only plugin is reported, never crashes.

use std::collections::BTreeSet;
use std::process::Command;

use adt_integration_tests::{adt_bench, build_plugins, diffusers_tiny, lib_name};
use adt_plugin_host::check_library;
use adt_plugin_host::conformance::{Check, Options, Outcome, run};

fn checks(krate: &str, config: serde_json::Value) -> Vec<Check> {
    let info = check_library(&build_plugins().join(lib_name(krate))).unwrap();
    run(
        &info,
        &Options {
            config,
            ..Default::default()
        },
    )
}

fn names(c: &[Check], outcome: Outcome) -> BTreeSet<&'static str> {
    c.iter()
        .filter(|c| c.outcome == outcome)
        .map(|c| c.name)
        .collect()
}

fn assert_all_pass(what: &str, c: &[Check]) {
    assert_eq!(c.len(), 13, "{what}: every check ran: {c:#?}");
    assert!(
        c.iter().all(|c| c.outcome == Outcome::Pass),
        "{what}: {}",
        adt_plugin_host::conformance::table(c)
    );
    // The gradient checks measured something, well inside their tolerance.
    for c in c
        .iter()
        .filter(|c| c.name.contains("vjp") || c.name.contains("(parameters)"))
    {
        let (e, t) = (c.error.unwrap(), c.tolerance.unwrap());
        assert!(e.is_finite() && e <= t, "{what} {}: {e} vs {t}", c.name);
    }
}

#[test]
fn the_built_in_model_conforms() {
    let c = checks("adt-plugin-tiny-dylib", serde_json::json!({}));
    assert_all_pass("tiny", &c);
    // tiny has no f64: its gradients are checked in its own dtype, and the table says so.
    let g = c.iter().find(|c| c.name == "denoise_vjp (input)").unwrap();
    assert!(
        g.detail.ends_with("(in the plugin's dtype)"),
        "{}",
        g.detail
    );
}

#[test]
fn the_sd_family_conforms_on_the_fixture_pipelines() {
    for (krate, family) in [
        ("adt-plugin-sd15", "sd15"),
        ("adt-plugin-sdxl", "sdxl"),
        ("adt-plugin-sd3", "sd3"),
    ] {
        let Some(dir) = diffusers_tiny(family) else {
            continue;
        };
        let c = checks(krate, serde_json::json!({ "weights": dir }));
        assert_all_pass(family, &c);
        // The SD plugins offer f64, so their gradients are checked in it.
        for g in c.iter().filter(|c| c.name.contains("vjp")) {
            assert!(
                g.detail.ends_with("(in f64)"),
                "{family} {}: {}",
                g.name,
                g.detail
            );
        }
    }
}

#[test]
fn planted_defects_fail_the_checks_that_test_them() {
    let c = checks("adt-test-plugin-broken", serde_json::json!({}));
    assert_eq!(
        names(&c, Outcome::Fail),
        BTreeSet::from([
            "determinism",
            "denoise_vjp (input)",
            "diffusion_loss (parameters)"
        ]),
        "{}",
        adt_plugin_host::conformance::table(&c)
    );
    let sign = c.iter().find(|c| c.name == "denoise_vjp (input)").unwrap();
    assert!(
        sign.error.unwrap() > 1.0,
        "a flipped sign is a relative error near 2: {sign:?}"
    );
    let det = c.iter().find(|c| c.name == "determinism").unwrap();
    assert!(
        det.detail.contains("diffusion_loss with one seed"),
        "{det:?}"
    );

    // Through the command: the table, the failures named, exit code 7.
    let lib = build_plugins().join(lib_name("adt-test-plugin-broken"));
    let o = Command::new(adt_bench())
        .args(["plugins", "check", "--conformance"])
        .arg(&lib)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(7), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("denoise_vjp (input)") && l.contains("FAIL")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("save/load") && l.contains("pass")),
        "{out}"
    );
    assert!(
        err.contains("failed 3 conformance check(s): determinism, denoise_vjp (input), diffusion_loss (parameters)"),
        "{err}"
    );
    // JSON for machines.
    let o = Command::new(adt_bench())
        .args(["plugins", "check", "--conformance", "--json"])
        .arg(&lib)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 13);
}

#[test]
fn a_panicking_inference_only_plugin_is_reported_not_fatal() {
    let c = checks("adt-test-plugin-panicky", serde_json::json!({}));
    let shapes = c.iter().find(|c| c.name == "shapes").unwrap();
    assert_eq!(shapes.outcome, Outcome::Fail);
    assert!(shapes.detail.contains("PANIC"), "{shapes:?}");
    // Its training calls are the SDK's defaults: skipped as checks, refused as calls.
    assert_eq!(
        names(&c, Outcome::Skip),
        BTreeSet::from([
            "decode_vjp",
            "denoise_vjp (input)",
            "denoise_vjp (parameters)",
            "diffusion_loss (parameters)",
            "step",
            "save/load"
        ])
    );
    let refused = c
        .iter()
        .find(|c| c.name == "training calls refused")
        .unwrap();
    assert_eq!(refused.outcome, Outcome::Pass, "{refused:?}");
}
