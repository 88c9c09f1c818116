//! `adt-bench run` end to end on the built-in model, scaled down: the grid, the cache, the
//! frame, the manifest, and reproducibility.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{text, weights};

fn run(cache: &Path, w: &Path, out: &Path) -> Output {
    let out = out.to_str().expect("utf-8 temp path");
    crate::common::run_with_weights(
        cache,
        w,
        &[
            "run",
            "-n",
            "4",
            "--batch",
            "4",
            "--train-samplers",
            "ddim:10",
            "--eval-samplers",
            "ddim:2,euler-a:3",
            "--seeds",
            "0",
            "--tune-args",
            "--iters 4 --d-warmup 1 --h 2 --batch 4 --disc-loss non-saturating",
            "--out",
            out,
        ],
    )
}

/// Debian's Chromium, if installed (`CHROMIUM` overrides the path).
fn chromium() -> Option<PathBuf> {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    p.exists().then_some(p)
}

/// Open `html` in headless Chromium and screenshot the page (1200 px wide, `height` tall).
fn screenshot(browser: &Path, html: &Path, png: &Path, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size=1200,{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .output()
        .expect("start chromium");
    assert!(png.exists(), "no screenshot: {}", text(&o));
}

/// Pixels of the screenshot within 40 (per channel) of `rgb`.
fn pixels_near(img: &image::RgbImage, rgb: [u8; 3]) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|c| (p.0[c] as i32 - rgb[c] as i32).abs() <= 40))
        .count()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn run_evaluates_the_grid_caches_its_work_and_reproduces_its_metrics() {
    let Some(w) = weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let a = tmp.path().join("a");
    let o = run(&cache, &w, &a);
    assert!(o.status.success(), "{}", text(&o));

    // The long-format frame: FID, KID and the controls for base/ft/adt × two eval samplers,
    // and the tuning log's controls for ft and adt.
    let csv = std::fs::read_to_string(a.join("metrics.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        head,
        [
            "model",
            "method",
            "train_sampler",
            "eval_sampler",
            "steps",
            "guidance",
            "seed",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "n"
        ]
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    for method in ["base", "ft", "adt", "ft-equal"] {
        for es in ["ddim:2", "euler-a:3"] {
            for metric in ["fid", "kid", "residual_noise"] {
                let r = rows
                    .iter()
                    .find(|r| r[1] == *method && r[3] == *es && r[7] == *metric)
                    .unwrap_or_else(|| panic!("no {metric} for {method} / {es}:\n{csv}"));
                let v: f64 = r[8].parse().unwrap();
                assert!(v.is_finite(), "{method} {es} {metric} = {v}");
                assert_eq!(&r[11], "4");
            }
        }
    }
    // The floor (a second drawing of the same captions) and the independent encoder's
    // distance, beside every FID.
    for (method, es, metric) in [
        ("floor", "real", "fid"),
        ("floor", "real", "shapes_fd"),
        ("adt", "ddim:2", "shapes_fd"),
        ("ft", "euler-a:3", "shapes_fd"),
    ] {
        let r = rows
            .iter()
            .find(|r| r[1] == *method && r[3] == *es && r[7] == *metric)
            .unwrap_or_else(|| panic!("no {metric} for {method} / {es}:\n{csv}"));
        let v: f64 = r[8].parse().unwrap();
        assert!(v.is_finite() && v > 0.0, "{method} {es} {metric} = {v}");
    }
    // Intervals: per seed and over seeds for FID/KID, and the paired ADT − FT difference.
    for (method, seed, metric) in [
        ("adt", "0", "fid"),
        ("adt", "", "fid"),
        ("base", "", "kid"),
        ("adt-ft", "0", "fid_diff"),
        ("adt-ft", "", "fid_diff"),
        ("adt-ft", "", "kid_diff"),
    ] {
        let r = rows
            .iter()
            .find(|r| r[1] == *method && r[6] == *seed && r[7] == *metric && r[3] == *"ddim:2")
            .unwrap_or_else(|| panic!("no {metric} for {method} seed {seed:?}:\n{csv}"));
        let (v, lo, hi): (f64, f64, f64) = (
            r[8].parse().unwrap(),
            r[9].parse().unwrap(),
            r[10].parse().unwrap(),
        );
        assert!(lo.is_finite() && hi.is_finite() && lo <= hi, "{r:?}");
        assert!(v.is_finite(), "{r:?}");
    }
    // The base model at the many-step reference sampler (first seed), and the few-step gap
    // at each eval sampler: base there minus base at the reference, per metric.
    let value = |method: &str, ts: &str, es: &str, metric: &str| -> f64 {
        rows.iter()
            .find(|r| r[1] == *method && r[2] == *ts && r[3] == *es && r[7] == *metric)
            .and_then(|r| r[8].parse().ok())
            .unwrap_or_else(|| panic!("no {metric} for {method} {ts} {es}:\n{csv}"))
    };
    let at_ref = value("base", "-", "ddim:50", "fid");
    for es in ["ddim:2", "euler-a:3"] {
        for metric in ["fid", "shapes_fd"] {
            let gap = value("few-step-gap", "ddim:50", es, metric);
            let (b, r) = (
                rows.iter()
                    .find(|r| r[1] == *"base" && r[6] == *"0" && r[3] == *es && r[7] == *metric)
                    .unwrap()[8]
                    .parse::<f64>()
                    .unwrap(),
                value("base", "-", "ddim:50", metric),
            );
            assert!(
                (gap - (b - r)).abs() < 1e-9,
                "{es} {metric}: {gap} vs {b} − {r}"
            );
        }
    }
    assert!(at_ref.is_finite());
    for method in ["ft", "adt"] {
        assert!(
            rows.iter()
                .any(|r| r[1] == *method && r[7] == *"tune_loss_diff_last"),
            "{method}: no tuning controls\n{csv}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r[1] == *"adt" && r[7] == *"tune_disc_gap_last")
    );
    assert!(a.join("metrics.parquet").exists());
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(
        report.contains("| tiny | adt | ddim:10 | euler-a:3 |"),
        "{report}"
    );
    assert!(report.contains("ADT − FT, paired"), "{report}");
    assert!(report.contains("Transfer matrix"), "{report}");
    assert!(
        report.contains("Few-step gap of the base model"),
        "{report}"
    );
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));
    assert!(html.contains("transfer matrix (FID)") && html.contains("gradient norm per step"));
    // The page in a real browser: the plots' lines and dots (palette blue, red) and the
    // heatmap's cells are drawn. CI sets ADT_REQUIRE_BROWSER=1 (and installs chromium).
    match chromium() {
        Some(b) => {
            let png = tmp.path().join("report.png");
            screenshot(&b, &a.join("report.html"), &png, 8000);
            let img = image::open(&png).unwrap().to_rgb8();
            let blue = pixels_near(&img, [0x1f, 0x77, 0xb4]);
            let red = pixels_near(&img, [0xd6, 0x27, 0x28]);
            let white = pixels_near(&img, [255, 255, 255]);
            eprintln!(
                "screenshot {}×{}: {blue} blue, {red} red, {white} white pixels",
                img.width(),
                img.height()
            );
            assert!(
                blue > 500 && red > 500,
                "plots not visible: {blue} blue, {red} red"
            );
            assert!(white < (img.width() * img.height()) as usize, "blank page");
        }
        None if std::env::var_os("ADT_REQUIRE_BROWSER").is_some() => {
            panic!("ADT_REQUIRE_BROWSER is set but /usr/bin/chromium (or $CHROMIUM) is missing")
        }
        None => {
            eprintln!("SKIPPED (browser check): no chromium; `apt-get install chromium` to run it")
        }
    }
    let cfg = std::fs::read_to_string(a.join("config.toml")).unwrap();
    assert!(
        cfg.contains("num = 4") && cfg.contains("bootstrap = 1000"),
        "{cfg}"
    );
    let norms = std::fs::read_to_string(a.join("grad_norms.csv")).unwrap();
    assert!(
        norms.lines().any(|l| l.contains(",eps,drtune,0,")),
        "{norms}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["fid"]["mode"], "clean");
    assert_eq!(
        m["inputs"]["eval_data"]["sha256"].as_str().map(str::len),
        Some(64),
        "{m}"
    );
    assert_eq!(m["inputs"]["eval_data"]["records"], 4, "{m}");
    // Wall time per stage, each stage once.
    for stage in [
        "plan",
        "reference",
        "tune",
        "sample",
        "features",
        "intervals",
        "report",
    ] {
        assert!(
            m["stage_seconds"][stage].as_f64().is_some_and(|t| t >= 0.0),
            "{stage}: {m}"
        );
    }
    assert_eq!(
        m["train_data"]["builtin:shapes"].as_str().map(str::len),
        Some(64),
        "{m}"
    );
    // Each tune's done.json keeps its resolved settings and the equivalent command line.
    let done = std::fs::read_dir(a.join("cache/tune"))
        .unwrap()
        .map(|e| e.unwrap().path().join("done.json"))
        .find(|p| p.is_file())
        .expect("a finished tune");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(done).unwrap()).unwrap();
    assert_eq!(d["settings"]["job"]["settings"]["iters"], 4, "{d}");
    let cmd = d["command"].as_str().unwrap();
    assert!(
        cmd.starts_with("adt-bench tune --model tiny") && cmd.contains("--iters 4"),
        "{cmd}"
    );
    assert!(a.join("logs/tiny-adt-ddim-10-s0.csv").exists());
    assert!(a.join("logs/tiny-ft-ddim-10-s0.parquet").exists());
    assert_eq!(m["config"]["seeds"][0], 0);
    assert!(
        m["hashes"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("adt")),
        "{m}"
    );

    // A rerun reuses every tuned model and sample and writes the same frame.
    let tuned = entries(&a.join("cache/tune"));
    let sampled = entries(&a.join("cache/samples"));
    // Tunes: ft, adt, ft-equal; samples: those and base with two eval samplers, and base
    // with the reference sampler.
    assert_eq!((tuned, sampled), (3, 9));
    let o = run(&cache, &w, &a);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("iterations of"),
        "retuned:\n{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(a.join("metrics.csv")).unwrap(), csv);
    assert_eq!(entries(&a.join("cache/tune")), tuned);

    // From scratch in another folder: the same frame (the run is deterministic).
    let b = tmp.path().join("b");
    let o = run(&cache, &w, &b);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(b.join("metrics.csv")).unwrap(), csv);

    // `report compare` passes on identical reports and fails (exit 6) on a planted regression.
    let cmp = |x: &Path, y: &Path, tol: &str| {
        crate::common::bin()
            .args(["report", "compare"])
            .args([x, y])
            .args(["--tol", tol])
            .output()
            .unwrap()
    };
    let o = cmp(&a, &b, "0");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 regressions"), "{}", text(&o));
    let planted: String = csv
        .lines()
        .map(|l| {
            if l.starts_with("tiny,adt,ddim:10,ddim:2,") && l.contains(",fid,") {
                let mut f: Vec<String> = l.split(',').map(String::from).collect();
                let v: f64 = f[8].parse().unwrap();
                f[8] = format!("{}", v * 1.05);
                f.join(",")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(planted, csv, "the FID row to worsen exists");
    std::fs::write(b.join("metrics.csv"), &planted).unwrap();
    let o = cmp(&a, &b, "0.01");
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION tiny adt train=ddim:10 eval=ddim:2 guidance=2 seed=0 fid"),
        "{}",
        text(&o)
    );
    // Within a 10 % tolerance the same change passes.
    let o = cmp(&a, &b, "0.1");
    assert!(o.status.success(), "{}", text(&o));

    let o = crate::common::bin()
        .args(["report", "show"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("# adt-bench run"));
}

/// `run --scores`: the CLIP-based metrics as frame rows (per seed and over seeds, with
/// intervals), a report table and the weights' hashes in the manifest.
#[test]
fn run_adds_quality_and_preference_scores() {
    let Some(w) = weights() else { return };
    let base = std::env::var_os("ADT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let f = base.join("clip-metrics");
    if !f.join("reference.safetensors").exists() {
        eprintln!(
            "SKIPPED: clip-metrics fixtures not found at {}",
            f.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let s = |p: &str| f.join(p).display().to_string();
    let (clip, head, oc, occ) = (
        s("hf-clip"),
        s("aesthetic-head.safetensors"),
        s("open-clip/open_clip_model.safetensors"),
        s("open-clip/tiny-hpsv2-vit.json"),
    );
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
            "base,ft,adt",
            "--train-samplers",
            "ddim:4",
            "--tune-args",
            "--iters 2 --d-warmup 1 --h 2 --batch 4",
            "--eval-samplers",
            "ddim:2",
            "--seeds",
            "0,1",
            "--bootstrap",
            "50",
            "--scores",
            "aesthetic,clipscore,hpsv2",
            "--clip-model",
            &clip,
            "--aesthetic-clip",
            &clip,
            "--aesthetic-head",
            &head,
            "--hps-model",
            &oc,
            "--hps-config",
            &occ,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    for metric in ["aesthetic", "clipscore", "hpsv2"] {
        for seed in ["0", "1", ""] {
            let r = rows
                .iter()
                .find(|r| &r[1] == "base" && &r[7] == metric && &r[6] == seed)
                .unwrap_or_else(|| panic!("no {metric} row for seed '{seed}':\n{csv}"));
            let (v, lo, hi): (f64, f64, f64) = (
                r[8].parse().unwrap(),
                r[9].parse().unwrap(),
                r[10].parse().unwrap(),
            );
            assert!(
                lo <= v + 1e-12 && v <= hi + 1e-12,
                "{metric} {seed}: {v} [{lo}, {hi}]"
            );
            assert_eq!(&r[11], if seed.is_empty() { "8" } else { "4" });
        }
    }
    // The over-seeds value is the mean of the two seeds' values.
    let val = |method: &str, metric: &str, seed: &str| -> f64 {
        rows.iter()
            .find(|r| &r[1] == method && &r[7] == metric && &r[6] == seed)
            .unwrap_or_else(|| panic!("no {method} {metric} seed '{seed}':\n{csv}"))[8]
            .parse()
            .unwrap()
    };
    let a = |seed: &str| val("base", "aesthetic", seed);
    assert!((a("") - (a("0") + a("1")) / 2.0).abs() < 1e-12);
    // Paired ADT − FT per seed = the difference of the two methods' means (per-image pairs).
    for seed in ["0", "1"] {
        let d = val("adt-ft", "hpsv2_diff", seed);
        let want = val("adt", "hpsv2", seed) - val("ft", "hpsv2", seed);
        assert!((d - want).abs() < 1e-9, "seed {seed}: {d} vs {want}");
    }
    let d_all = val("adt-ft", "aesthetic_diff", "");
    let want = (val("adt-ft", "aesthetic_diff", "0") + val("adt-ft", "aesthetic_diff", "1")) / 2.0;
    assert!((d_all - want).abs() < 1e-12);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Quality and preference scores"), "{md}");
    assert!(md.contains("ΔHPSv2") && md.contains("Δaesthetic"), "{md}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    for metric in ["aesthetic", "clipscore", "hpsv2"] {
        let files = m["scores"][metric]["files_sha256"].as_array().unwrap();
        assert!(
            files.iter().all(|f| f[1].as_str().unwrap().len() == 64),
            "{m}"
        );
    }
    assert!(
        m["scores"]["aesthetic"]["files_sha256"]
            .to_string()
            .contains("aesthetic-head")
    );
}

/// A prompt file and reference statistics drive the evaluation: FID against the `.npz` (mode
/// checked), its content hash and the prompts' in the manifest; prompts without a reference
/// are refused before any work.
#[test]
fn prompts_and_reference_statistics_drive_the_evaluation() {
    let Some(w) = weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = t.join("cache");
    let prompts = t.join("prompts.txt");
    std::fs::write(&prompts, adt_bench::sampling::eval_prompts(4).join("\n")).unwrap();
    let stats = |mode: &str, file: &Path| {
        let o = crate::common::run_with_weights(
            &cache,
            &w,
            &[
                "fid",
                "builtin:shapes?offset=1000000",
                "-n",
                "4",
                "--mode",
                mode,
                "--save-stats",
                file.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    };
    let clean = t.join("ref.npz");
    stats("clean", &clean);
    let run = |reference: &Path, out: &str| {
        crate::common::run_with_weights(
            &cache,
            &w,
            &[
                "run",
                "--methods",
                "base",
                "--seeds",
                "0",
                "-n",
                "4",
                "--batch",
                "4",
                "--eval-samplers",
                "ddim:2",
                "--bootstrap",
                "0",
                "--prompts",
                prompts.to_str().unwrap(),
                "--fid-ref",
                reference.to_str().unwrap(),
                "--out",
                t.join(out).to_str().unwrap(),
            ],
        )
    };
    let o = run(&clean, "a");
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(t.join("a/metrics.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("tiny,base,-,ddim:2,2,2.0,0,fid,")),
        "{csv}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("a/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["inputs"]["fid_ref"]["sha256"].as_str().map(str::len),
        Some(64),
        "{m}"
    );
    assert_eq!(m["inputs"]["prompts"]["used"], 4, "{m}");
    assert!(
        !t.join("a/real").exists(),
        "no reference images were needed"
    );

    // Statistics of another FID mode are refused by name.
    let other = t.join("pt.npz");
    stats("pytorch-fid", &other);
    let o = run(&other, "b");
    let e = text(&o);
    assert!(
        !o.status.success() && e.contains("pytorch-fid") && e.contains("--fid-ref"),
        "{e}"
    );

    // Prompts without a reference: refused, nothing written.
    let o = crate::common::run_with_weights(
        &cache,
        &w,
        &[
            "run",
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            t.join("c").to_str().unwrap(),
        ],
    );
    let e = text(&o);
    assert!(
        !o.status.success() && e.contains("--eval-data") && e.contains("--fid-ref"),
        "{e}"
    );
    assert!(!t.join("c").exists());
}

/// With `--ema`, a tuned cell is evaluated from the moving average of its weights: the
/// manifest's hash of the weights the run sampled is the average's file, not the last weights.
#[test]
fn a_tune_with_a_moving_average_is_evaluated_from_the_average() {
    let Some(w) = weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
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
            "adt",
            "--tune-args",
            "--iters 3 --d-warmup 1 --h 1 --batch 4 --lr 1e-3 --ema 0.5",
            "--eval-samplers",
            "ddim:2",
            "--seeds",
            "0",
            "--bootstrap",
            "20",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    fn find(dir: &Path, name: &str, hits: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                find(&p, name, hits);
            } else if p.file_name().is_some_and(|n| n == name) {
                hits.push(p);
            }
        }
    }
    let mut hits = Vec::new();
    find(tmp.path(), "ema.safetensors", &mut hits);
    assert_eq!(hits.len(), 1, "one tuned cell, one average: {hits:?}");
    let sha = |p: &Path| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    let ema = sha(&hits[0]);
    let last = sha(&hits[0].with_file_name("model.safetensors"));
    assert_ne!(ema, last);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["hashes"]["tiny/adt/ddim:4/seed 0 weights"].as_str(),
        Some(ema.as_str()),
        "{}",
        m["hashes"]
    );
}
