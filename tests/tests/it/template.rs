//! The plugin template as a user meets it: copied out of the repository, renamed, built on its
//! own (its own target folder, no workspace), then checked for conformance, sampled from and
//! run through a short `run`.

use std::path::Path;
use std::process::Command;

use adt_integration_tests::{adt_bench, inception, lib_name};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

#[test]
fn the_template_builds_alone_conforms_samples_and_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("adt-plugin-mymodel");
    copy_dir(&repo.join("plugins/template"), &crate_dir);
    let _ = std::fs::remove_dir_all(crate_dir.join("target"));
    // Rename the package and point the SDK dependency at this checkout, as the README says.
    let manifest = crate_dir.join("Cargo.toml");
    let api = repo.join("plugins/api").canonicalize().unwrap();
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("adt-plugin-template", "adt-plugin-mymodel")
        .replace(
            "path = \"../api\"",
            &format!("path = {:?}", api.display().to_string()),
        );
    std::fs::write(&manifest, text).unwrap();
    let target = tmp.path().join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the template does not build on its own:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lib = target.join("release").join(lib_name("adt-plugin-mymodel"));
    assert!(lib.is_file(), "{} was not built", lib.display());

    // Conformance: every check passes.
    let o = Command::new(adt_bench())
        .args(["plugins", "check", "--conformance"])
        .arg(&lib)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("all checks passed"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(" pass ")).count(),
        13,
        "{out}"
    );

    // Installed in a plugin folder: listed, sampled from, run.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&lib, plugins.join(lib_name("adt-plugin-mymodel"))).unwrap();
    let bench = || {
        let mut c = Command::new(adt_bench());
        c.arg("--plugin-path").arg(&plugins);
        c
    };
    let o = bench()
        .args([
            "sample",
            "--model",
            "template",
            "--sampler",
            "ddim:4",
            "-n",
            "2",
        ])
        .arg("--out")
        .arg(tmp.path().join("samples"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("samples/000001.png").is_file());

    let Some(w) = inception() else { return };
    let out = tmp.path().join("run");
    let o = bench()
        .args([
            "run",
            "--models",
            "template",
            "--backbone",
            "template=shapes",
            "-n",
            "4",
            "--batch",
            "4",
            "--methods",
            "base,ft,adt",
            "--tune-args",
            "--iters 2 --d-warmup 1 --h 1 --batch 4",
            "--eval-samplers",
            "ddim:2",
            "--seeds",
            "0",
            "--bootstrap",
            "20",
        ])
        .arg("--out")
        .arg(&out)
        .env("ADT_CACHE_DIR", tmp.path().join("cache"))
        .env("ADT_INCEPTION_WEIGHTS", &w)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    for method in ["base", "ft", "adt"] {
        assert!(
            csv.lines()
                .any(|l| l.starts_with(&format!("template,{method},")) && l.contains(",fid,")),
            "no FID row for {method}:\n{csv}"
        );
    }
}
