//! The headline command over the three SD families, on the diffusers-tiny pipelines: one
//! `run --config` names sd15, sdxl and sd3 with their pipeline folders and a tiny DINOv2,
//! evaluation images with captions, a PartiPrompts-style TSV and the CLIP-metrics fixture's
//! score models, and writes one report with every model × method × sampler cell, the
//! per-category table and the scores. A plan that forces a discrete sampler on SD3 is refused
//! before any work, and the same pipelines as Hugging Face cache layouts load offline without
//! paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adt_integration_tests::{adt_bench, inception, tiny_dinov2};

fn fixture(family: &str) -> Option<PathBuf> {
    adt_integration_tests::diffusers_tiny(family)
}

fn clip_metrics() -> Option<PathBuf> {
    let d = fixture("sd15")?.join("../../clip-metrics");
    if d.join("hf-clip/config.json").is_file() {
        Some(d)
    } else {
        eprintln!("SKIPPED: clip-metrics fixture not found at {}", d.display());
        None
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn bench(tmp: &Path, w: &Path) -> Command {
    let mut c = Command::new(adt_bench());
    c.env("NO_COLOR", "1")
        .env("ADT_CACHE_DIR", tmp.join("cache"))
        .env("ADT_INCEPTION_WEIGHTS", w)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", tmp.join("empty-hub"));
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FAMILIES: [&str; 3] = ["sd15", "sdxl", "sd3"];

#[test]
fn one_config_runs_the_three_families_with_real_inputs() {
    let (Some(_), Some(cm), Some(w)) = (fixture("sd15"), clip_metrics(), inception()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dino = tiny_dinov2(&t.join("dinov2"));
    // Evaluation data: the fixture's real photos with sidecar captions.
    let eval = t.join("eval");
    std::fs::create_dir_all(&eval).unwrap();
    let photos: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(cm.join("images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    for (i, p) in photos.iter().enumerate() {
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        std::fs::copy(p, eval.join(format!("{stem}.png"))).unwrap();
        std::fs::write(
            eval.join(format!("{stem}.txt")),
            format!("a photo number {i}"),
        )
        .unwrap();
    }
    // A PartiPrompts-style TSV: two categories, two challenges.
    let tsv = t.join("parti.tsv");
    std::fs::write(
        &tsv,
        "Prompt\tCategory\tChallenge\tNote\n\
         a photo of an astronaut riding a horse\tPeople\tBasic\t\n\
         a \"red\" horse on mars\tAnimals\tImagination\t\n\
         an astronaut on mars\tPeople\tImagination\t\n\
         a horse riding a photo\tAnimals\tBasic\t\n",
    )
    .unwrap();
    let s = |p: &Path| p.display().to_string().replace('\\', "/");
    let mut toml = format!(
        "methods = [\"base\", \"ft\", \"adt\"]\nseeds = [0]\nnum = 4\nbatch = 4\nbootstrap = 10\n\
         prompts = \"{}\"\neval_data = \"{}\"\nscores = [\"clipscore\", \"pickscore\", \"aesthetic\"]\n\
         out = \"{}\"\n\n[tune]\niters = 2\nh = 2\nbatch = 2\nd_warmup = 0\n\n\
         [score_models]\nclip_model = \"{}\"\npickscore_model = \"{}\"\naesthetic_clip = \"{}\"\n\
         aesthetic_head = \"{}\"\naesthetic_processor = \"torchvision\"\n",
        s(&tsv),
        s(&eval),
        s(&t.join("out")),
        s(&cm.join("hf-clip")),
        s(&cm.join("hf-clip")),
        s(&cm.join("hf-clip")),
        s(&cm.join("aesthetic-head.safetensors")),
    );
    for f in FAMILIES {
        toml += &format!(
            "\n[models.{f}]\nweights = \"{}\"\nbackbone = \"dinov2:{}\"\n",
            s(&fixture(f).unwrap()),
            s(&dino)
        );
    }
    // sd15 and sdxl take the run's default samplers; sd3 (flow matching) its schedule's.
    let cfg = t.join("bench.toml");
    std::fs::write(&cfg, &toml).unwrap();

    // Forcing a discrete sampler on SD3 is refused while planning, before any work.
    let o = bench(t, &w)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--set", "sd3.eval_samplers=[\"ddim:4\"]"])
        .output()
        .unwrap();
    let e = text(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("model `sd3`") && e.contains("ddim:4") && e.contains("flow-euler"),
        "{e}"
    );
    assert!(
        !t.join("out/cache").exists(),
        "nothing was tuned or sampled"
    );

    // The plan: every model's samplers, every cell to do.
    let o = bench(t, &w)
        .args(["run", "--plan", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let plan = text(&o);
    assert!(o.status.success(), "{plan}");
    for f in FAMILIES {
        assert!(plan.contains(&format!("model {f} ")), "{plan}");
    }
    assert!(plan.contains("eval samplers flow-euler:4"), "{plan}");
    assert!(plan.contains("eval samplers ddim:4, dpm++2m:4"), "{plan}");
    assert!(plan.contains("work left: 6 tune(s)"), "{plan}");

    let o = bench(t, &w)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "run failed:\n{}", text(&o));
    let out = t.join("out");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let has = |model: &str, method: &str, es: &str, metric: &str| {
        csv.lines().any(|l| {
            let c: Vec<&str> = l.split(',').collect();
            c.len() > 8
                && c[0] == model
                && c[1] == method
                && c[3] == es
                && c[7] == metric
                && c[6].is_empty()
        })
    };
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        &header[..8],
        [
            "model",
            "method",
            "train_sampler",
            "eval_sampler",
            "steps",
            "guidance",
            "seed",
            "metric"
        ]
    );
    for f in FAMILIES {
        let evals: &[&str] = if f == "sd3" {
            &["flow-euler:4"]
        } else {
            &["ddim:4", "dpm++2m:4"]
        };
        for m in ["base", "ft", "adt"] {
            for es in evals {
                for metric in ["fid", "kid", "clipscore", "pickscore", "aesthetic"] {
                    assert!(
                        has(f, m, es, metric),
                        "{f} {m} {es} {metric} missing:\n{csv}"
                    );
                }
            }
        }
        for es in evals {
            assert!(
                has(f, "adt-ft", es, "fid_diff"),
                "{f} {es} fid_diff:\n{csv}"
            );
        }
    }
    assert!(
        !csv.lines()
            .any(|l| l.starts_with("sd3,") && l.contains("ddim")),
        "sd3 never runs a discrete sampler:\n{csv}"
    );
    // The per-category breakdown.
    let cats = std::fs::read_to_string(out.join("categories.csv")).unwrap();
    for needle in [
        "Category,People",
        "Category,Animals",
        "Challenge,Imagination",
        "sd3,adt",
    ] {
        assert!(cats.contains(needle), "{needle} missing:\n{cats}");
    }
    assert!(out.join("categories.parquet").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Scores by Category") && md.contains("Scores by Challenge"));
    // Every input in the manifest with its content hash.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let inputs = &m["inputs"];
    assert_eq!(inputs["prompts"]["used"], 4);
    assert_eq!(inputs["prompts"]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(inputs["eval_data"]["records"], 4);
    assert_eq!(
        inputs["eval_data"]["sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(
        m["train_data"]["builtin:shapes"].as_str().map(str::len),
        Some(64)
    );
    for f in FAMILIES {
        assert!(m["config"]["per_model"][f]["weights"].is_string(), "{m}");
    }
    // A second run reuses every cell.
    let o = bench(t, &w)
        .args(["run", "--plan", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let plan = text(&o);
    assert!(
        plan.contains("work left: 0 tune(s), 0 iteration(s); 0 sample set(s)"),
        "{plan}"
    );
}

/// A repo's snapshot in the Hugging Face cache layout.
fn cache_repo(hub: &Path, repo: &str, from: &Path) {
    let root = hub.join(format!("models--{}", repo.replace('/', "--")));
    copy_dir(from, &root.join("snapshots/0123abcd"));
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "0123abcd").unwrap();
}

#[test]
fn the_usual_repo_ids_load_from_the_hugging_face_cache_offline() {
    let (Some(_), Some(w)) = (fixture("sd15"), inception()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hub = t.join("hub");
    for (f, repo) in [
        ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0"),
        ("sd3", "stabilityai/stable-diffusion-3-medium-diffusers"),
    ] {
        cache_repo(&hub, repo, &fixture(f).unwrap());
    }
    let dino = tiny_dinov2(&t.join("dino"));
    cache_repo(&hub, "facebook/dinov2-small", &dino);
    let o = bench(t, &w)
        .env("HF_HUB_CACHE", &hub)
        .args(["run", "--plan", "--models", "sd15,sdxl,sd3", "--out"])
        .arg(t.join("out"))
        .output()
        .unwrap();
    let plan = text(&o);
    assert!(o.status.success(), "{plan}");
    for f in FAMILIES {
        assert!(plan.contains(&format!("model {f} ")), "{plan}");
    }
    assert!(plan.contains("models--facebook--dinov2-small"), "{plan}");
    // And a run: sd3 from its repo id, ADT with the default backbone from the cache.
    let o = bench(t, &w)
        .env("HF_HUB_CACHE", &hub)
        .args([
            "run",
            "--models",
            "sd3",
            "--methods",
            "base,adt",
            "--seeds",
            "0",
        ])
        .args(["-n", "2", "--batch", "2", "--bootstrap", "0"])
        .args(["--tune-args", "--iters 2 --h 2 --batch 2 --d-warmup 0"])
        .args([
            "--eval-samplers",
            "flow-euler:2",
            "--train-samplers",
            "flow-euler:2",
        ])
        .arg("--out")
        .arg(t.join("out"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(t.join("out/metrics.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("sd3,adt,flow-euler:2,flow-euler:2")),
        "{csv}"
    );
}
