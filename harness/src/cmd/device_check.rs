//! `adt-bench bench device`: the checks that need the GPU machine, as one command.
//! Each step prints one line and lands in `OUT/device-check.json`; a failing step is reported
//! and the others still run (exit 1 at the end if any failed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use adt_plugin_api::HostTensor;
use adt_plugin_host::Denoise;
use anyhow::{Context, bail};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::cli::{BenchDeviceArgs, BenchInceptionArgs, GlobalOpts};

/// max|a − b| / max|b|.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let m = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    if a.len() != b.len() {
        f64::INFINITY
    } else {
        d / m.max(1e-30)
    }
}

fn noise(shape: &[usize], seed: u64) -> HostTensor {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    HostTensor {
        shape: shape.to_vec(),
        data: (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect(),
    }
}

/// tiny on both devices: denoise (with guidance) and the input cotangent of denoise_vjp.
fn tiny_calls(g: &GlobalOpts, dev: &str, reference: &str) -> anyhow::Result<Value> {
    let reg = crate::registry::load(g)?;
    let mut outs = Vec::new();
    for d in [reference, dev] {
        let mut m = crate::engine::settings::ModelSpec::new("tiny", d.parse()?).open(&reg)?;
        let shape = [4, 3, 32, 32];
        let x = noise(&shape, 1);
        let cot = noise(&shape, 2);
        let c = m.encode_prompts(&crate::sampling::eval_prompts(4))?;
        let u = m.encode_prompts(&[String::new()])?;
        let args = Denoise {
            x: &x,
            t: &[100.0, 400.0, 700.0, 950.0],
            cond: c,
            uncond: Some(u),
            guidance: 2.0,
            detach_uncond: false,
        };
        let out = m.denoise(&args)?;
        let gx = m
            .denoise_vjp(&args, &cot, true)?
            .context("no input cotangent")?;
        outs.push((out, gx));
    }
    Ok(json!({
        "denoise_rel": rel(&outs[1].0.data, &outs[0].0.data),
        "denoise_vjp_input_rel": rel(&outs[1].1.data, &outs[0].1.data),
    }))
}

/// A tune written as `tune`'s options (the check's fixed settings), run through the engine.
fn tune(g: &GlobalOpts, args: &[String]) -> anyhow::Result<()> {
    #[derive(clap::Parser)]
    struct TuneCli {
        #[command(flatten)]
        a: crate::cli::TuneArgs,
    }
    let mut argv = vec!["tune".to_string()];
    argv.extend(args.iter().cloned());
    let a = TuneCli::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .a;
    let method = a
        .method
        .parse::<crate::engine::settings::Method>()?
        .tuned()
        .context("the device check tunes with adt or ft")?;
    let job = crate::engine::cells::TuneJob {
        model: a.model.spec()?,
        method,
        sampler: a.sampler.parse()?,
        seed: a.seed,
        settings: crate::engine::settings::TuneSettings::from_args(&a)?,
    };
    let reg = crate::registry::load(g)?;
    let out = a.resume.clone().unwrap_or_else(|| a.out.clone());
    crate::engine::cells::tune_model(&reg, &job, &out, a.stop_after, a.reset_optimizer, g.quiet)?;
    Ok(())
}

fn log_rows(dir: &Path) -> anyhow::Result<Vec<std::collections::HashMap<String, f64>>> {
    let mut r = csv::Reader::from_path(dir.join("log.csv"))?;
    let head = r.headers()?.clone();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        rows.push(
            head.iter()
                .zip(rec.iter())
                .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
                .collect(),
        );
    }
    Ok(rows)
}

fn weights_rel(a: &Path, b: &Path) -> anyhow::Result<f64> {
    let ta = candle_core::safetensors::load(a, &candle_core::Device::Cpu)?;
    let tb = candle_core::safetensors::load(b, &candle_core::Device::Cpu)?;
    let mut worst = 0f64;
    for (k, x) in &ta {
        let y = tb
            .get(k)
            .with_context(|| format!("{} lacks {k}", b.display()))?;
        let x: Vec<f32> = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let y: Vec<f32> = y
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        worst = worst.max(rel(&y, &x));
    }
    Ok(worst)
}

/// One ADT iteration of tiny (one discriminator and one model update) on both devices.
fn tiny_iteration(g: &GlobalOpts, dev: &str, reference: &str, out: &Path) -> anyhow::Result<Value> {
    let mut dirs = Vec::new();
    for d in [reference, dev] {
        let dir = out.join(format!("tiny-adt-{}", d.replace(':', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        let args: Vec<String> = [
            "--model",
            "tiny",
            "--device",
            d,
            "--method",
            "adt",
            "--sampler",
            "ddim:4",
            "--iters",
            "1",
            "--h",
            "1",
            "--batch",
            "4",
            "-k",
            "3",
            "--seed",
            "0",
            "--disc-loss",
            "non-saturating",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.display().to_string()])
        .collect();
        tune(g, &args)?;
        dirs.push(dir);
    }
    let (a, b) = (log_rows(&dirs[0])?, log_rows(&dirs[1])?);
    let (a, b) = (
        a.last().context("empty log")?,
        b.last().context("empty log")?,
    );
    let mut o = serde_json::Map::new();
    for k in ["loss_d", "loss_adv", "loss_diff", "grad_norm"] {
        if let (Some(x), Some(y)) = (a.get(k), b.get(k)) {
            o.insert(
                format!("{k}_rel"),
                json!((x - y).abs() / x.abs().max(1e-12)),
            );
        }
    }
    let ck = |d: &PathBuf| d.join("checkpoint/model/model.safetensors");
    o.insert(
        "weights_after_rel".into(),
        json!(weights_rel(&ck(&dirs[0]), &ck(&dirs[1]))?),
    );
    o.insert("seconds_reference".into(), json!(a.get("seconds")));
    o.insert("seconds_device".into(), json!(b.get("seconds")));
    Ok(Value::Object(o))
}

/// Inception features of the fixture's photos on both devices.
fn inception_parity(
    net: &adt_metrics::inception::Inception,
    fixtures: &Path,
    dev: &candle_core::Device,
    reference: &candle_core::Device,
) -> anyhow::Result<Value> {
    let dir = fixtures.join("fid/images");
    let mut files: Vec<PathBuf> = Vec::new();
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)
            .with_context(|| format!("no fixture images at {}", d.display()))?
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "png" || x == "jpg" || x == "jpeg")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files.truncate(64);
    let imgs: Vec<image::RgbImage> = files
        .iter()
        .map(|p| {
            Ok(image::open(p)
                .with_context(|| p.display().to_string())?
                .to_rgb8())
        })
        .collect::<anyhow::Result<_>>()?;
    let ex = |d: &candle_core::Device| {
        adt_metrics::features::Extractor::new(net, adt_metrics::Mode::Clean, 16)
            .on(d.clone())
            .features(&imgs)
    };
    if imgs.is_empty() {
        bail!("no images under {}", dir.display());
    }
    let (a, b) = (ex(reference)?, ex(dev)?);
    Ok(json!({ "images": imgs.len(), "features_rel": rel(&b, &a) }))
}

/// Inception images/s at batch 64 on `dev` (8 timed batches after a warm-up).
fn throughput(
    net: &adt_metrics::inception::Inception,
    dev: &candle_core::Device,
) -> anyhow::Result<Value> {
    let n = 64;
    let x = noise(&[n, 3, 299, 299], 3);
    let t = candle_core::Tensor::from_vec(x.data, (n, 3, 299, 299), dev)?;
    let run = || -> anyhow::Result<()> {
        if dev.is_cpu() {
            let act = adt_metrics::inception::Act {
                n,
                h: 299,
                w: 299,
                c: 3,
                data: t.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1()?,
            };
            net.features(&act)?;
        } else {
            net.features_candle(&t)?.flatten_all()?.to_vec1::<f32>()?;
        }
        Ok(())
    };
    run()?;
    let t0 = Instant::now();
    for _ in 0..8 {
        run()?;
    }
    Ok(json!({ "batch": n, "images_per_second": (8 * n) as f64 / t0.elapsed().as_secs_f64() }))
}

/// Poll nvidia-smi for the device's used memory (MiB) until stopped; returns the peak.
fn memory_sampler(index: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<f64>> {
    std::thread::spawn(move || {
        let mut peak: Option<f64> = None;
        while !stop.load(Ordering::Relaxed) {
            let o = std::process::Command::new("nvidia-smi")
                .args([
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-i",
                ])
                .arg(index.to_string())
                .output();
            if let Ok(o) = o
                && let Ok(v) = String::from_utf8_lossy(&o.stdout).trim().parse::<f64>()
            {
                peak = Some(peak.map_or(v, |p: f64| p.max(v)));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        peak
    })
}

/// One ADT iteration (K = 3, batch 1) of SD 1.5's architecture with invented weights, and a
/// random ViT-S/14 discriminator backbone.
fn sd15_iteration(g: &GlobalOpts, dev: &str, size: usize, out: &Path) -> anyhow::Result<Value> {
    if size != 512 {
        eprintln!("note: --sd-size {size}: the SD 1.5 figures are NOT at 512 px");
    }
    let dir = out.join("sd15-random-adt");
    let _ = std::fs::remove_dir_all(&dir);
    let index: usize = dev
        .strip_prefix("cuda:")
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let baseline = if dev.starts_with("cuda") {
        let stop = Arc::new(AtomicBool::new(true));
        memory_sampler(index, stop).join().ok().flatten()
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = dev
        .starts_with("cuda")
        .then(|| memory_sampler(index, stop.clone()));
    let t0 = Instant::now();
    let args: Vec<String> = [
        "--model",
        "sd15",
        "--weights",
        &format!("random:sd15?seed=0&size={size}"),
        "--device",
        dev,
        "--method",
        "adt",
        "--sampler",
        "ddim:10",
        "-k",
        "3",
        "--iters",
        "3",
        "--h",
        "1",
        "--batch",
        "1",
        "--seed",
        "0",
        "--disc-loss",
        "non-saturating",
        "--backbone",
        "dinov2:random",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.display().to_string()])
    .collect();
    let r = tune(g, &args);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.and_then(|h| h.join().ok().flatten());
    r?;
    let rows = log_rows(&dir)?;
    let secs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get("seconds").copied())
        .collect();
    // The first iteration includes one-time costs (kernel JIT, allocation); report the rest.
    let steady: Vec<f64> = secs.iter().skip(1).copied().collect();
    Ok(json!({
        "image_size": size,
        "k": 3,
        "batch": 1,
        "iteration_seconds": secs,
        "steady_iteration_seconds": if steady.is_empty() { Value::Null } else { json!(steady.iter().sum::<f64>() / steady.len() as f64) },
        "peak_gpu_memory_mib": peak,
        "baseline_gpu_memory_mib": baseline,
        "wall_seconds_including_load": t0.elapsed().as_secs_f64(),
    }))
}

/// The same iteration in PyTorch + diffusers on the same GPU (scripts/torch_adt_iteration.py),
/// when the machine's Python has them.
fn torch_iteration(size: usize) -> anyhow::Result<Value> {
    let script = [
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.join("torch_adt_iteration.py"))),
        Some(PathBuf::from("scripts/torch_adt_iteration.py")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .context("scripts/torch_adt_iteration.py not found")?;
    let py = std::env::var("ADT_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&py)
        .arg(&script)
        .args(["--size", &size.to_string()])
        .output()
        .with_context(|| format!("cannot run {py}"))?;
    if !o.status.success() {
        bail!(
            "PyTorch reference unavailable: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let line = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(line.lines().last().unwrap_or(""))
        .context("PyTorch reference printed no JSON")?;
    Ok(v)
}

pub fn run(g: &GlobalOpts, a: &BenchDeviceArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&a.out)?;
    let dev = crate::device::open(&a.device)?;
    let reference = crate::device::open(&a.reference_device)?;
    let mut report = serde_json::Map::new();
    report.insert("device".into(), json!(a.device));
    report.insert("reference_device".into(), json!(a.reference_device));
    if let Ok(o) = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .output()
    {
        report.insert(
            "gpus".into(),
            json!(String::from_utf8_lossy(&o.stdout).trim()),
        );
    }
    let mut failed = Vec::new();
    let mut step = |name: &str, r: anyhow::Result<Value>| match r {
        Ok(v) => {
            println!("{name}: {v}");
            report.insert(name.into(), v);
        }
        Err(e) => {
            println!("{name}: FAILED: {e:#}");
            report.insert(name.into(), json!({ "error": format!("{e:#}") }));
            failed.push(name.to_string());
        }
    };
    step("tiny_calls", tiny_calls(g, &a.device, &a.reference_device));
    step(
        "tiny_adt_iteration",
        tiny_iteration(g, &a.device, &a.reference_device, &a.out),
    );
    let random_net;
    let mut net = crate::engine::evaluate::Net::new(&a.inception, g.quiet);
    let inc = if a.random_inception {
        random_net = adt_metrics::inception::Inception::new(
            &adt_metrics::weights::InceptionWeights::random(0),
        );
        Ok(&random_net)
    } else {
        net.get().map(|(n, _, _)| n)
    };
    match inc {
        Ok(n) => {
            step(
                "inception_parity",
                inception_parity(n, &a.fixtures, &dev, &reference),
            );
            if !a.skip_throughput && a.random_inception {
                step("inception_throughput", throughput(n, &dev));
            }
        }
        Err(e) => step("inception_parity", Err(e)),
    }
    if !a.skip_throughput && !a.random_inception {
        let b = BenchInceptionArgs {
            batch: 64,
            batches: 8,
            threads: None,
            python: None,
            torch_script: None,
            device: a.device.clone(),
            inception: a.inception.clone(),
            json: false,
        };
        println!(
            "inception_throughput (batch 64, ours on {} beside PyTorch when present):",
            a.device
        );
        step(
            "inception_throughput",
            super::bench::inception(g, &b).map(|_| json!("printed above")),
        );
    }
    if !a.skip_sd {
        step(
            "sd15_adt_iteration",
            sd15_iteration(g, &a.device, a.sd_size, &a.out),
        );
        if a.device.starts_with("cuda") {
            step("sd15_adt_iteration_pytorch", torch_iteration(a.sd_size));
        }
    }
    // Ratios ours / PyTorch when both ran.
    if let (Some(o), Some(t)) = (
        report.get("sd15_adt_iteration"),
        report.get("sd15_adt_iteration_pytorch"),
    ) {
        let r = |k: &str| match (o[k].as_f64(), t[k].as_f64()) {
            (Some(x), Some(y)) if y > 0.0 => json!(x / y),
            _ => Value::Null,
        };
        let ratio = json!({
            "time_ours_over_pytorch": r("steady_iteration_seconds"),
            "peak_memory_ours_over_pytorch": r("peak_gpu_memory_mib"),
        });
        println!("sd15_adt_iteration ratio: {ratio}");
        report.insert("sd15_adt_iteration_ratio".into(), ratio);
    }
    report.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    let path = a.out.join("device-check.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?)?;
    println!(
        "wrote {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("device check: {} failed", failed.join(", "));
    }
    Ok(())
}
