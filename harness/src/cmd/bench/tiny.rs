//! `adt-bench bench tiny`: the built-in model's training step, ADT's trained evaluation and a
//! sampling step, each with the model's own CPU ops (convolution as one GEMM per image,
//! GroupNorm and biases with hand-written backward passes) beside candle's ops (the
//! reference: `conv2d`, the written-out GroupNorm, broadcast biases) in the same process, on
//! the same inputs; plus the agreement of the two outputs.

use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde_json::json;

use adt_plugin_api::TensorRef;
use adt_plugin_api::sdk::{DenoiseArgs, ModelPlugin};
use adt_plugin_tiny::TinyModel;

use crate::cli::{BenchTinyArgs, GlobalOpts};

/// One timed operation: (name, seconds per call with ours, with the reference, max |Δ| of
/// the outputs).
struct Row {
    what: &'static str,
    ours: f64,
    reference: f64,
    max_abs_diff: f64,
}

/// Best-of-`reps` seconds of `f` (after one warm-up call), and its last output.
fn time<T>(reps: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut out = f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        out = f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, out))
}

pub fn run(g: &GlobalOpts, a: &BenchTinyArgs) -> anyhow::Result<()> {
    let mut m = TinyModel::create(&json!({ "weights": "builtin" }))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot open the built-in model")?;
    let s = m.config().size;
    let b = a.batch.max(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let shape = [b, 3, s, s];
    let n = b * 3 * s * s;
    let x0: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let xt: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let cot: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
    let t: Vec<f32> = (0..b).map(|i| 0.1 + 0.8 * i as f32 / b as f32).collect();
    let prompts: Vec<String> = (0..b).map(|i| format!("a red circle {i}")).collect();
    let e = |e: adt_plugin_api::sdk::PluginError| anyhow::anyhow!("{e}");
    let cond = m.encode_prompts(&prompts).map_err(e)?;
    let uncond = m.encode_prompts(&[String::new()]).map_err(e)?;
    let args = DenoiseArgs {
        x: TensorRef {
            shape: &shape,
            data: &xt,
        },
        t: &t,
        cond,
        uncond: Some(uncond),
        guidance: 3.0,
        detach_uncond: true,
    };
    let x0r = TensorRef {
        shape: &shape,
        data: &x0,
    };
    let cotr = TensorRef {
        shape: &shape,
        data: &cot,
    };
    let reps = a.reps;
    if !g.quiet {
        eprintln!(
            "timing the tiny model ({s}×{s}, batch {b}, best of {reps}), {} threads …",
            rayon::current_num_threads()
        );
    }
    let mut measure = |reference: bool| -> anyhow::Result<[(f64, Vec<f32>); 3]> {
        adt_plugin_tiny::ops::set_reference(reference);
        let train = time(reps, || {
            m.zero_grad().map_err(e)?;
            let l = m.diffusion_loss(x0r, cond, 7, 1.0).map_err(e)?;
            Ok(vec![l as f32])
        })?;
        let vjp = time(reps, || {
            m.zero_grad().map_err(e)?;
            let g = m.denoise_vjp(&args, cotr, true).map_err(e)?;
            Ok(g.map(|g| g.data).unwrap_or_default())
        })?;
        let sample = time(reps, || Ok(m.denoise(&args).map_err(e)?.data))?;
        adt_plugin_tiny::ops::set_reference(false);
        Ok([train, vjp, sample])
    };
    let ours = measure(false)?;
    let theirs = measure(true)?;
    let names = [
        "training step (diffusion loss, forward + backward)",
        "ADT trained evaluation (guided denoise_vjp)",
        "sampling step (guided denoise)",
    ];
    let rows: Vec<Row> = names
        .iter()
        .zip(ours.iter().zip(&theirs))
        .map(|(what, (o, r))| Row {
            what,
            ours: o.0,
            reference: r.0,
            max_abs_diff: o
                .1
                .iter()
                .zip(&r.1)
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max),
        })
        .collect();
    let out = json!({
        "batch": b, "size": s, "reps": reps, "threads": rayon::current_num_threads(),
        "rows": rows.iter().map(|r| json!({
            "what": r.what, "ours_seconds": r.ours, "candle_ops_seconds": r.reference,
            "speedup": r.reference / r.ours, "max_abs_diff": r.max_abs_diff,
        })).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "tiny model, {s}×{s}, batch {b}, best of {reps}, {} threads (reference: candle's conv2d, written-out GroupNorm, broadcast biases):",
        rayon::current_num_threads()
    );
    for r in &rows {
        println!("  {}:", r.what);
        println!(
            "    adt-bench {:8.3} s   candle ops {:8.3} s   speedup {:5.2}×   max |Δ| {:.1e}",
            r.ours,
            r.reference,
            r.reference / r.ours,
            r.max_abs_diff
        );
    }
    Ok(())
}
