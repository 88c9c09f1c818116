//! Samplers come from plugin libraries, shipped or not: the shipped samplers load from
//! `libadt_plugin_samplers_lib.so` beside `adt-bench` (nothing is linked in), and a sampler
//! plugin built outside the workspace's default members (`tests/plugins/extra-sampler`:
//! DDIM with trailing spacing, written against `adt-plugin-api` alone) is listed and used by
//! `sample` and `run` once it is on the plugin path.

use std::path::Path;
use std::process::{Command, Output};

use adt_integration_tests::{adt_bench, build_plugins, lib_name};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A folder holding only the extra sampler library.
fn extra_dir(dir: &Path) {
    let src = build_plugins().join(lib_name("adt-test-plugin-extra-sampler"));
    std::fs::copy(src, dir.join(lib_name("adt-plugin-extra-sampler"))).unwrap();
}

#[test]
fn the_shipped_samplers_load_from_their_library_and_list_every_sampler() {
    let o = Command::new(adt_bench())
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let plugins = v["plugins"].as_array().unwrap();
    let shipped = plugins
        .iter()
        .find(|p| p["plugin"]["name"] == "builtin-samplers")
        .expect("the shipped samplers are found");
    let source = shipped["plugin"]["source"]["library"]
        .as_str()
        .expect("loaded from a library, not linked in");
    assert!(
        source.contains(&lib_name("adt-plugin-samplers-lib")),
        "{source}"
    );
    let names: Vec<&str> = shipped["samplers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
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
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    for model in ["tiny", "sd15", "sdxl", "sd3"] {
        assert!(
            plugins.iter().any(|p| p["plugin"]["name"] == model),
            "{model} missing: {v}"
        );
    }
    // unipc, listed, also samples.
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(adt_bench())
        .args(["sample", "--sampler", "unipc:5", "-n", "2", "--out"])
        .arg(tmp.path().join("u"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(tmp.path().join("u/000001.png").is_file());
}

#[test]
fn a_sampler_plugin_from_outside_is_listed_sampled_and_run() {
    let plugins = tempfile::tempdir().unwrap();
    extra_dir(plugins.path());
    let tmp = tempfile::tempdir().unwrap();
    let bench = || {
        let mut c = Command::new(adt_bench());
        c.env("NO_COLOR", "1")
            .env("ADT_PLUGIN_PATH", plugins.path())
            .env("ADT_CACHE_DIR", tmp.path().join("cache"));
        c
    };
    let o = bench().args(["plugins", "list"]).output().unwrap();
    let listing = text(&o);
    assert!(o.status.success(), "{listing}");
    assert!(
        listing.lines().any(
            |l| l.starts_with("extra-samplers") && l.contains(plugins.path().to_str().unwrap())
        ),
        "{listing}"
    );
    assert!(listing.contains("ddim-trailing"), "{listing}");

    // `sample` with it: trailing spacing starts at the last training timestep.
    let o = bench()
        .args(["sample", "--sampler", "ddim-trailing:4", "-n", "3", "--out"])
        .arg(tmp.path().join("s"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("s/sample.json")).unwrap())
            .unwrap();
    assert_eq!(meta["sampler"], "ddim-trailing:4");
    assert_eq!(
        meta["timesteps"],
        serde_json::json!([999.0, 749.0, 499.0, 249.0])
    );
    // The same images as the shipped DDIM with trailing spacing on the same noise (a plugin
    // written from the API alone reproduces it exactly), other images than leading spacing.
    let ddim = |spacing: &str, dir: &str| {
        let o = bench()
            .args([
                "sample",
                "--sampler",
                "ddim:4",
                "--spacing",
                spacing,
                "-n",
                "3",
                "--out",
            ])
            .arg(tmp.path().join(dir))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(tmp.path().join(dir).join("000000.png")).unwrap()
    };
    let ours = std::fs::read(tmp.path().join("s/000000.png")).unwrap();
    assert_eq!(ours, ddim("trailing", "t"));
    assert_ne!(ours, ddim("leading", "l"));

    // `run` plans, tunes and evaluates with it; the report has its cells.
    let Ok((w, _)) = adt_metrics::weights::resolve(None, adt_metrics::weights::Fetch::Auto) else {
        eprintln!("SKIPPED: no Inception weights for the run");
        return;
    };
    let out = tmp.path().join("run");
    let o = bench()
        .env("ADT_INCEPTION_WEIGHTS", &w)
        .args(["run", "--methods", "base,ft", "--seeds", "0", "-n", "4"])
        .args(["--train-samplers", "ddim-trailing:2"])
        .args([
            "--eval-samplers",
            "ddim-trailing:2,ddim:2",
            "--bootstrap",
            "0",
        ])
        .args(["--tune-args", "--iters 2 --h 1 --batch 2 --d-warmup 0"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        csv.lines().any(
            |l| l.starts_with("tiny,ft,ddim-trailing:2,ddim-trailing:2,") && l.contains(",fid,")
        ),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("tiny,ft,ddim-trailing:2,ddim:2,") && l.contains(",fid,")),
        "{csv}"
    );
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("extra-samplers"), "{manifest}");

    // Without the plugin path the sampler is unknown, and the plan says so before any work.
    let o = Command::new(adt_bench())
        .args([
            "run",
            "--plan",
            "--eval-samplers",
            "ddim-trailing:2",
            "--out",
        ])
        .arg(tmp.path().join("none"))
        .output()
        .unwrap();
    let e = text(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("ddim-trailing") && e.contains("model `tiny`"),
        "{e}"
    );
}
