//! The `adt-bench` binary as users run it.

use std::path::Path;

use crate::common::{run, text};

#[test]
fn plugins_list_shows_tiny_and_every_sampler() {
    let o = run(&["plugins", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("tiny ") && l.contains("model") && l.contains("built-in")),
        "{out}"
    );
    for s in [
        "ddim",
        "ddpm",
        "euler",
        "euler-a",
        "heun",
        "dpm++2m",
        "flow-euler",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{s} "))),
            "sampler {s} missing:\n{out}"
        );
    }
    let o = run(&["plugins", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plugins"][0]["plugin"]["name"], "tiny");
}

/// `--no-exe-dir` (or `ADT_PLUGIN_NO_EXE_DIR=1`) leaves the libraries beside the executable
/// unopened: only the built-in model remains, until ADT_PLUGIN_PATH names that folder.
#[test]
fn no_exe_dir_loads_plugins_only_from_the_named_path() {
    let names = |o: &std::process::Output| -> Vec<String> {
        assert!(o.status.success(), "{}", text(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["plugin"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = names(&run(&["plugins", "list", "--json"]));
    assert!(all.len() > 1, "{all:?}");
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_adt-bench"));
    let locked = crate::common::bin()
        .args(["--no-exe-dir", "plugins", "list", "--json"])
        .env_remove("ADT_PLUGIN_PATH")
        .output()
        .unwrap();
    assert_eq!(names(&locked), ["tiny"]);
    let by_env = crate::common::bin()
        .args(["plugins", "list", "--json"])
        .env_remove("ADT_PLUGIN_PATH")
        .env("ADT_PLUGIN_NO_EXE_DIR", "1")
        .output()
        .unwrap();
    assert_eq!(names(&by_env), ["tiny"]);
    let named = crate::common::bin()
        .args(["--no-exe-dir", "plugins", "list", "--json"])
        .env("ADT_PLUGIN_PATH", exe.parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(names(&named), all);
}

#[test]
fn plugins_check_refuses_a_non_plugin_with_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("libadt_plugin_x.so");
    std::fs::write(&p, b"not a library").unwrap();
    let o = run(&["plugins", "check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("is not an adt-bench plugin"),
        "{}",
        text(&o)
    );
}

fn pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count()
}

#[test]
fn sample_writes_pngs_and_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o = run(&[
        "-q",
        "sample",
        "--model",
        "tiny",
        "--sampler",
        "ddim:4",
        "--guidance",
        "3",
        "-n",
        "3",
        "--seed",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--grid",
        dir.path().join("grid.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&out), 3, "the images and no grid in the image folder");
    let grid = image::open(dir.path().join("grid.png")).unwrap();
    assert!(grid.width() > 2 * 32, "a 2×2 grid of 32-pixel images");
    let img = image::open(out.join("000000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sample.json")).unwrap()).unwrap();
    assert_eq!(meta["sampler"], "ddim:4");
    assert_eq!(
        std::fs::read_to_string(out.join("prompts.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

/// Mean absolute pixel difference (0–255) between two PNG files.
fn png_distance(a: &Path, b: &image::RgbImage) -> f64 {
    let a = image::open(a).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.as_raw().len() as f64
}

#[test]
fn img2img_starts_from_the_evaluation_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut dist = Vec::new();
    for start in ["0", "7"] {
        let out = dir.path().join(format!("i{start}"));
        let o = run(&[
            "-q",
            "sample",
            "--sampler",
            "ddim:8",
            "--img2img",
            start,
            "-n",
            "4",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("sample.json")).unwrap())
                .unwrap();
        assert_eq!(meta["img2img_start"], start.parse::<u64>().unwrap());
        let d: f64 = (0..4)
            .map(|i| {
                let real = adt_datasets::shapes::generate(
                    adt_datasets::shapes::ShapesConfig::DEFAULT,
                    1_000_000 + i,
                )
                .image;
                let real = adt_datasets::transform::resize_center_crop(&real, 32);
                png_distance(&out.join(format!("{i:06}.png")), &real)
            })
            .sum::<f64>()
            / 4.0;
        dist.push(d);
    }
    // From the last step (little noise) the result is the real image up to a few levels; from
    // the first step the model redraws it.
    assert!(dist[1] < 8.0, "start 7: mean |Δ| {:.2}", dist[1]);
    assert!(
        dist[0] > 2.0 * dist[1],
        "start 0 {:.2} vs start 7 {:.2}",
        dist[0],
        dist[1]
    );
    let o = run(&[
        "-q",
        "sample",
        "--sampler",
        "ddim:8",
        "--img2img",
        "8",
        "-n",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("past the last step"), "{}", text(&o));
}

#[test]
fn init_latents_fix_the_result_whatever_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    // Two latents of shape [3, 32, 32] from a fixed pattern.
    let data: Vec<u8> = (0..2 * 3 * 32 * 32)
        .flat_map(|i| (((i * 37 % 101) as f32 - 50.0) / 30.0).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3, 32, 32], &data)
            .unwrap();
    let file = dir.path().join("noise.safetensors");
    std::fs::write(
        &file,
        safetensors::serialize(vec![("latents".to_string(), view)], None).unwrap(),
    )
    .unwrap();
    let mut outs = Vec::new();
    for seed in ["1", "2"] {
        let out = dir.path().join(format!("s{seed}"));
        let o = run(&[
            "-q",
            "sample",
            "--sampler",
            "ddim:3",
            "--seed",
            seed,
            "--init-latents",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(pngs(&out), 2, "one image per latent");
        outs.push(std::fs::read(out.join("000001.png")).unwrap());
    }
    assert_eq!(
        outs[0], outs[1],
        "deterministic sampler + given noise: the seed must not matter"
    );
    // Wrong shape is refused clearly.
    let bad = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![1, 3, 8, 8],
        &data[..3 * 64 * 4],
    )
    .unwrap();
    std::fs::write(
        &file,
        safetensors::serialize(vec![("latents".to_string(), bad)], None).unwrap(),
    )
    .unwrap();
    let o = run(&[
        "-q",
        "sample",
        "--init-latents",
        file.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the model needs [N, 3, 32, 32]"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_sampler_and_bad_data_are_clear_errors() {
    let o = run(&["sample", "--sampler", "ddim", "-n", "1"]);
    assert!(
        text(&o).contains("must be written name:steps"),
        "{}",
        text(&o)
    );
    let o = run(&["sample", "--sampler", "plms:10", "-n", "1"]);
    assert!(text(&o).contains("no sampler named `plms`"), "{}", text(&o));
    let o = run(&["pretrain", "--data", "/no/such/folder", "--iters", "1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

#[test]
fn pretrain_is_deterministic_and_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let go = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "-q",
            "pretrain",
            "--iters",
            "4",
            "--batch",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let a = go("a", &[]);
    let b = go("b", &["--stop-after", "2"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["iter"], 2);
    // A kill after a step was logged but before its checkpoint: the row is written again on
    // resume, not twice.
    let mut log = std::fs::read_to_string(b.join("log.csv")).unwrap();
    log.push_str("3,0.5,1.0,0.001,0\n");
    std::fs::write(b.join("log.csv"), log).unwrap();
    go("b", &[]);
    let ckpt = |d: &Path| std::fs::read(d.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        ckpt(&a) == ckpt(&b),
        "an interrupted and resumed run must equal an uninterrupted one"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("log.csv")).unwrap(),
        std::fs::read_to_string(b.join("log.csv")).unwrap()
    );
    // Different settings in the same folder are refused, not mixed.
    let o = run(&[
        "pretrain",
        "--iters",
        "5",
        "--batch",
        "2",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("different settings"),
        "{}",
        text(&o)
    );
    // A checkpoint without its optimizer state is refused, naming the way to reset it; with
    // --reset-optimizer the resume runs on from the saved weights.
    let c = go("c", &["--stop-after", "2"]);
    std::fs::remove_file(c.join("checkpoint/optimizer.safetensors")).unwrap();
    let resume = |extra: &[&str]| {
        let mut args = vec![
            "pretrain",
            "--iters",
            "4",
            "--batch",
            "2",
            "--out",
            c.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = resume(&[]);
    assert!(
        o.status.code() == Some(1)
            && text(&o).contains("no optimizer state")
            && text(&o).contains("--reset-optimizer"),
        "{}",
        text(&o)
    );
    let o = resume(&["--reset-optimizer"]);
    assert!(
        o.status.success() && text(&o).contains("the optimizer starts afresh"),
        "{}",
        text(&o)
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["iter"], 4);
    assert!(ckpt(&c) != ckpt(&a), "a fresh optimizer takes other steps");
}

#[test]
fn pretrain_stops_with_exit_code_5_when_training_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let o = run(&[
        "pretrain",
        "--iters",
        "20",
        "--batch",
        "2",
        "--lr",
        "1e30",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        text(&o).contains("non-finite steps in a row"),
        "{}",
        text(&o)
    );
}

#[test]
fn results_do_not_depend_on_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut grids = Vec::new();
    for batch in ["1", "3"] {
        let out = dir.path().join(batch);
        let o = run(&[
            "-q",
            "sample",
            "--weights",
            "random",
            "--sampler",
            "dpm++2m:3",
            "-n",
            "3",
            "--batch",
            batch,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        grids.push(
            image::open(out.join("000002.png"))
                .unwrap()
                .to_rgb8()
                .into_raw(),
        );
    }
    // Batching changes float summation order only: allow 1/255 per pixel.
    let max = grids[0]
        .iter()
        .zip(&grids[1])
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(max <= 1, "max pixel difference {max}");
}

#[test]
fn tune_writes_a_csv_and_parquet_log_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft");
    let o = out.to_str().unwrap();
    let args = [
        "tune",
        "--model",
        "tiny",
        "--method",
        "ft",
        "--sampler",
        "ddim:4",
        "--iters",
        "4",
        "--h",
        "2",
        "--batch",
        "4",
        "--out",
        o,
        "--quiet",
    ];
    let r = run(&[&args[..], &["--stop-after", "2"]].concat());
    assert!(r.status.success(), "{}", text(&r));
    // A resume on other training data is refused, naming the difference.
    let r = run(&[&args[..], &["--data", "builtin:shapes?seed=3"]].concat());
    assert!(!r.status.success());
    assert!(
        text(&r).contains("training data: builtin:shapes") && text(&r).contains("seed=3"),
        "{}",
        text(&r)
    );
    let r = run(&args);
    assert!(r.status.success(), "{}", text(&r));
    let csv = std::fs::read_to_string(out.join("log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "header + 4 rows:\n{csv}");
    assert!(out.join("log.parquet").exists());
    assert!(out.join("checkpoint/state.json").exists());
    // Bad settings are usage errors with a clear message.
    let r = run(&["tune", "--method", "gan", "--out", o]);
    assert!(!r.status.success());
    assert!(text(&r).contains("unknown method"), "{}", text(&r));
}

/// `bench tiny` times the model's CPU ops and candle's in one process: three operations, each
/// with both times, and outputs that agree to rounding.
#[test]
fn bench_tiny_compares_the_model_ops_with_candles() {
    let o = run(&[
        "bench", "tiny", "--batch", "2", "--reps", "1", "--json", "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{j}");
    for r in rows {
        for k in ["ours_seconds", "candle_ops_seconds", "speedup"] {
            let v = r[k].as_f64().unwrap();
            assert!(v > 0.0 && v.is_finite(), "{k}: {j}");
        }
        assert!(r["max_abs_diff"].as_f64().unwrap() < 1e-3, "{j}");
    }
}

/// The tunes roll out with the guidance the evaluation samples with: the model's by default,
/// the run's `--guidance` when given, the tune settings' own when they name one.
#[test]
fn run_tunes_with_the_guidance_it_evaluates_with() {
    let out = tempfile::tempdir().unwrap();
    let o_dir = out.path().join("r");
    let o = o_dir.to_str().unwrap();
    let plan = |extra: &[&str]| {
        let mut args = vec!["run", "--plan", "--out", o];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert!(r.status.success(), "{}", text(&r));
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    let line = |p: &str| {
        p.lines()
            .find(|l| l.trim_start().starts_with("rollout guidance"))
            .unwrap_or_else(|| panic!("no rollout line in\n{p}"))
            .to_string()
    };
    let p = plan(&[]);
    let eval: String = p
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("guidance "))
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no guidance line in\n{p}"))
        .to_string();
    assert!(
        line(&p).contains(&format!("rollout guidance {eval};")),
        "{p}"
    );
    assert!(line(&p).contains("sees quantized images"), "{p}");
    assert!(line(&plan(&["--guidance", "3.5"])).contains("rollout guidance 3.5;"));
    let own = plan(&["--guidance", "3.5", "--tune-args", "--guidance 1.5"]);
    assert!(line(&own).contains("rollout guidance 1.5;"), "{own}");
    assert!(line(&p).contains("evaluated: the last weights"), "{p}");
    let ema = plan(&["--tune-args", "--ema 0.99"]);
    assert!(
        line(&ema).contains("evaluated: the moving average of the weights (decay 0.99)"),
        "{ema}"
    );
}

/// The base model is also sampled with the many-step reference sampler on the first seed
/// (the few-step gap); `--reference-sampler` changes it, `none` drops it, and one that does
/// not exist is refused before any work, naming it.
#[test]
fn run_plans_the_reference_sampler_of_the_few_step_gap() {
    let out = tempfile::tempdir().unwrap();
    let o_dir = out.path().join("r");
    let o = o_dir.to_str().unwrap();
    let plan = |extra: &[&str]| {
        let mut args = vec!["run", "--plan", "--out", o, "--seeds", "3,4"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let stdout = |r: &std::process::Output| {
        assert!(r.status.success(), "{}", text(r));
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    let refs = |p: &str| {
        p.lines()
            .filter(|l| l.trim_start().starts_with("sample   base  ddim:50"))
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>()
    };
    let p = stdout(&plan(&[]));
    assert!(
        p.contains("reference ddim:50 (base, seed 3: the few-step gap)"),
        "{p}"
    );
    assert_eq!(refs(&p).len(), 1, "first seed only: {p}");
    assert!(refs(&p)[0].contains("seed 3"), "{p}");
    let other = stdout(&plan(&["--reference-sampler", "dpm++2m:20"]));
    assert!(other.contains("reference dpm++2m:20"), "{other}");
    assert!(refs(&other).is_empty(), "{other}");
    let none = stdout(&plan(&["--reference-sampler", "none"]));
    assert!(!none.contains("reference"), "{none}");
    // An eval sampler that is the reference is not sampled twice.
    let same = stdout(&plan(&["--eval-samplers", "ddim:4,ddim:50"]));
    assert_eq!(
        refs(&same).len(),
        2,
        "once per seed, as an eval sampler: {same}"
    );
    // Without the base method there is nothing to sample with it.
    let tuned = stdout(&plan(&["--methods", "ft,adt"]));
    assert!(!tuned.contains("reference"), "{tuned}");
    let bad = plan(&["--reference-sampler", "nosuch:50"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("nosuch"), "{}", text(&bad));
}

/// A second `sample` into a folder that holds an earlier set is refused (a smaller set would
/// otherwise sit among the larger one's images and `fid` would read them all); `--overwrite`
/// replaces the set.
#[test]
fn sample_never_mixes_a_new_set_with_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o_str = out.to_str().unwrap();
    let sample = |n: &str, extra: &[&str]| {
        let mut args = vec![
            "-q",
            "sample",
            "--sampler",
            "ddim:2",
            "-n",
            n,
            "--out",
            o_str,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = sample("3", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sample("2", &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already holds an earlier sample set")
            && text(&o).contains("--overwrite"),
        "{}",
        text(&o)
    );
    assert_eq!(pngs(&out), 3, "the earlier set is left as it was");
    let o = sample("2", &["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&out), 2);
}
