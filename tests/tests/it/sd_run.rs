//! `adt-bench run --models sd15 --weights sd15=PATH` (and sd3) end to end on the diffusers-tiny
//! fixture pipelines, on CPU, with the model plugins loaded dynamically from beside the
//! binary: base / FT / ADT (a tiny random DINOv2 as the discriminator backbone), few steps,
//! FID/KID against the built-in evaluation set, the report and manifest.

use std::path::PathBuf;
use std::process::Command;

use adt_integration_tests::{adt_bench, inception, tiny_dinov2};

fn fixture(family: &str) -> Option<PathBuf> {
    adt_integration_tests::diffusers_tiny(family)
}

fn run_family(family: &str, sampler: &str, eval: &str) {
    let (Some(pipe), Some(w)) = (fixture(family), inception()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dino = tiny_dinov2(&tmp.path().join("dinov2"));
    let out = tmp.path().join("out");
    let o = Command::new(adt_bench())
        .env("NO_COLOR", "1")
        .env("ADT_CACHE_DIR", tmp.path().join("cache"))
        .env("ADT_INCEPTION_WEIGHTS", &w)
        .args(["run", "--models", family])
        .arg("--weights")
        .arg(format!("{family}={}", pipe.display()))
        .arg("--backbone")
        .arg(format!("{family}=dinov2:{}", dino.display()))
        .args([
            "--train-samplers",
            sampler,
            "--eval-samplers",
            eval,
            "--seeds",
            "0",
        ])
        .args(["-n", "4", "--batch", "4", "--bootstrap", "10"])
        .args([
            "--tune-args",
            "--iters 2 --h 2 --batch 2 --disc-loss non-saturating",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{family} run failed:\n{text}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    for method in ["base", "ft", "adt"] {
        let fid: Vec<f64> = csv
            .lines()
            .filter(|l| l.starts_with(&format!("{family},{method},")) && l.contains(",fid,"))
            .map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                let i = cols.iter().position(|c| *c == "fid").unwrap();
                cols[i + 1].parse().unwrap()
            })
            .collect();
        assert!(!fid.is_empty(), "{family} {method}: no FID rows in\n{csv}");
        assert!(
            fid.iter().all(|f| f.is_finite() && *f > 0.0),
            "{family} {method}: {fid:?}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let weights = manifest["config"]["per_model"][family]["weights"]
        .as_str()
        .unwrap();
    assert_eq!(weights, pipe.display().to_string(), "{manifest}");
    let plugin = manifest["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == family)
        .unwrap_or_else(|| panic!("manifest lacks the {family} plugin"));
    assert!(
        plugin["source"]
            .as_str()
            .unwrap()
            .contains(&format!("libadt_plugin_{family}"))
    );
    assert!(plugin["sha256"].as_str().is_some_and(|s| s.len() == 64));
    // The model's own record: the pipeline's content hash and, for a local folder, no hub
    // origin.
    let model = &manifest["models"][family];
    assert!(
        model["weights_hash"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "{manifest}"
    );
    assert_eq!(model["plugin"]["pipeline"], pipe.display().to_string());
    assert!(model["plugin"]["hub"].is_null(), "{manifest}");
    assert!(out.join("report.html").is_file());
}

#[test]
fn sd15_runs_end_to_end_on_the_tiny_pipeline() {
    run_family("sd15", "ddim:3", "ddim:3,euler:3");
}

#[test]
fn sd3_runs_end_to_end_on_the_tiny_pipeline() {
    run_family("sd3", "flow-euler:3", "flow-euler:3");
}

#[test]
fn a_model_without_cached_weights_or_with_a_foreign_pipeline_is_refused_clearly() {
    let Some(sd3) = fixture("sd3") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let o = Command::new(adt_bench())
            .env("NO_COLOR", "1")
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", tmp.path().join("empty-hub"))
            .args([
                "run",
                "--models",
                "sd15",
                "-n",
                "2",
                "--seeds",
                "0",
                "--methods",
                "base",
            ])
            .args(["--eval-samplers", "ddim:2", "--out"])
            .arg(tmp.path().join("o"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&[]);
    // No --weights: the usual repo id, not cached and offline → what to fetch, and the flag.
    assert!(
        e.contains("stable-diffusion-v1-5/stable-diffusion-v1-5")
            && e.contains("huggingface-cli download")
            && e.contains("--weights MODEL=PATH"),
        "{e}"
    );
    let e = run(&["--weights".into(), format!("sd15={}", sd3.display())]);
    assert!(
        e.contains("StableDiffusion3Pipeline") && e.contains("use `sd3`"),
        "{e}"
    );
    let e = run(&["--weights".into(), "sdxl=/x".into()]);
    assert!(e.contains("not in the run's models"), "{e}");
}
