//! The CI workflow of docs/ci.md end to end: a user's crate with an insta snapshot test over a
//! run's report passes, then fails with a readable diff once a regression is planted; `report
//! compare` under the same rules exits 6 naming the gated row.

use std::path::Path;
use std::process::Command;

use crate::common::{text, weights};

const RULES: &str = r#"
exclude = ["tune_*"]
gate = ["fid", "kid"]
default_tol = 0.02
"#;

fn cargo_test(krate: &Path, target: &Path, report: &Path, update: &str) -> std::process::Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet", "--release"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", target)
        .env("REPORT_DIR", report)
        .env("INSTA_UPDATE", update)
        .env("CI", "true")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo test in the user crate")
}

#[test]
fn a_snapshot_test_in_a_users_crate_catches_a_planted_regression() {
    let Some(w) = weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let o = crate::common::run_with_weights(
        &tmp.path().join("cache"),
        &w,
        &[
            "run",
            "-n",
            "4",
            "--batch",
            "4",
            "--methods",
            "base,adt",
            "--tune-args",
            "--iters 2 --d-warmup 1 --h 1 --batch 4",
            "--eval-samplers",
            "ddim:2",
            "--seeds",
            "0",
            "--bootstrap",
            "20",
            "--out",
            report.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // The user's crate: adt-reports without parquet, insta, one snapshot test.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let krate = tmp.path().join("my-ci");
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            r#"[package]
name = "my-ci"
version = "0.1.0"
edition = "2024"
publish = false

[dev-dependencies]
adt-reports = {{ path = {:?}, default-features = false }}
insta = "1"

[workspace]
"#,
            repo.join("reports").display().to_string()
        ),
    )
    .unwrap();
    // The workspace's lock pins the same versions (cached, nothing new to resolve).
    std::fs::copy(repo.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    std::fs::write(krate.join("ci.toml"), RULES).unwrap();
    std::fs::write(
        krate.join("tests/report.rs"),
        r#"#[test]
fn report() {
    let dir = std::env::var("REPORT_DIR").expect("REPORT_DIR");
    let rules = adt_reports::CiConfig::read("ci.toml".as_ref()).unwrap();
    insta::assert_snapshot!("report", adt_reports::snapshot(dir.as_ref(), &rules).unwrap());
}
"#,
    )
    .unwrap();
    let target = tmp.path().join("target");
    // First run: no snapshot yet; accepted as `cargo insta accept` would.
    let o = cargo_test(&krate, &target, &report, "always");
    assert!(o.status.success(), "{}", text(&o));
    let snap = krate.join("tests/snapshots/report__report.snap");
    let accepted = std::fs::read_to_string(&snap).unwrap();
    assert!(
        accepted.contains("tiny adt ddim:4 → ddim:2 g2 seed 0 fid = "),
        "{accepted}"
    );
    assert!(
        !accepted.contains("tune_"),
        "excluded metrics stay out: {accepted}"
    );
    // Again, as CI runs it: the same report passes.
    let o = cargo_test(&krate, &target, &report, "no");
    assert!(o.status.success(), "{}", text(&o));

    // Plant a regression: ADT's FID up by 30 % in a copy of the report.
    let planted = tmp.path().join("planted");
    std::fs::create_dir_all(&planted).unwrap();
    let csv = std::fs::read_to_string(report.join("metrics.csv")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for l in csv.lines() {
        let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
        if f[1] == "adt" && f[7] == "fid" {
            for x in &mut f[8..=10] {
                if let Ok(v) = x.parse::<f64>() {
                    *x = (v * 1.3).to_string();
                }
            }
        }
        lines.push(f.join(","));
    }
    std::fs::write(planted.join("metrics.csv"), lines.join("\n") + "\n").unwrap();
    let o = cargo_test(&krate, &target, &planted, "no");
    let out = text(&o);
    assert!(
        !o.status.success(),
        "the planted regression must fail:\n{out}"
    );
    assert!(out.contains("Snapshot: report"), "{out}");
    // The diff names the row, old value and new.
    let old = accepted
        .lines()
        .find(|l| l.starts_with("tiny adt ddim:4 → ddim:2 g2 seed 0 fid = "))
        .unwrap();
    let value = old.split(" = ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        out.contains(value),
        "the old value {value} is in the diff:\n{out}"
    );
    assert!(out.contains("seed 0 fid = "), "{out}");

    // The same rules gate `report compare`: FID is gated and regressed.
    let o = crate::common::run(&[
        "report",
        "compare",
        report.to_str().unwrap(),
        planted.to_str().unwrap(),
        "--config",
        krate.join("ci.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION tiny adt train=ddim:4 eval=ddim:2 guidance=2 seed=0 fid"),
        "{}",
        text(&o)
    );
    // The unchanged report passes under them.
    let o = crate::common::run(&[
        "report",
        "compare",
        report.to_str().unwrap(),
        report.to_str().unwrap(),
        "--config",
        krate.join("ci.toml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
