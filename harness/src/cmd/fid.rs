//! `adt-bench fid`: FID (and KID) between two image sets or statistics files, and
//! `--save-stats` to write a set's statistics in the `.npz` format pytorch-fid and clean-fid use.

use anyhow::{Context, bail};
use serde_json::json;

use adt_metrics::Mode;
use adt_metrics::arch::DIMS;

use crate::cli::{FidArgs, GlobalOpts};
use crate::engine::evaluate::{Net, SetOptions, set_stats, set_warnings, stats_meta};

pub fn run(g: &GlobalOpts, a: &FidArgs) -> anyhow::Result<()> {
    let mut net = Net::new(&a.inception, g.quiet);
    if a.fetch_weights {
        let (_, sha, note) = net.get()?;
        if a.json {
            println!("{}", json!({ "weights": note, "sha256": sha }));
        } else {
            println!("Inception weights: {note}\nsha256 (of the tensors): {sha}");
        }
        return Ok(());
    }
    let mode = Mode::parse(&a.mode).with_context(|| {
        format!(
            "unknown mode `{}`; the modes are clean, pytorch-fid, tf-legacy",
            a.mode
        )
    })?;
    let opts = SetOptions {
        mode,
        batch: a.batch.max(1),
        skip_bad: a.skip_bad,
        num: a.num,
        use_cache: !a.no_cache,
        quiet: g.quiet || a.json,
        device: crate::device::open(&a.device)?,
    };
    match (&a.save_stats, a.inputs.as_slice()) {
        (Some(out), [input]) => {
            let s = set_stats(input, &mut net, &opts)?;
            let Some(features) = &s.features else {
                bail!("{input} is already a statistics file");
            };
            let meta = stats_meta(
                mode,
                s.weights.as_deref().unwrap_or(""),
                s.count.unwrap_or(0),
                input,
            );
            adt_metrics::npz::write_stats(out, &s.gaussian, Some(features), &meta)?;
            let warnings = set_warnings(&s, mode);
            if a.json {
                println!(
                    "{}",
                    json!({ "saved": out, "n": s.count, "mode": mode.name(),
                            "weights_sha256": s.weights, "warnings": warnings })
                );
            } else {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "wrote {} ({} images, mode {mode})",
                    out.display(),
                    s.count.unwrap_or(0)
                );
            }
            Ok(())
        }
        (Some(_), _) => bail!("--save-stats takes exactly one input"),
        (None, [a_in, b_in]) => {
            let sa = set_stats(a_in, &mut net, &opts)?;
            let sb = set_stats(b_in, &mut net, &opts)?;
            if let (Some(x), Some(y)) = (&sa.weights, &sb.weights)
                && x != y
            {
                bail!(
                    "{} and {} were computed with different Inception weights ({x} vs {y})",
                    sa.label,
                    sb.label
                );
            }
            let t = std::time::Instant::now();
            let r = adt_metrics::stats::fid(&sa.gaussian, &sb.gaussian)?;
            let fid_s = t.elapsed().as_secs_f64();
            let kid = if a.kid {
                let (Some(fa), Some(fb)) = (&sa.features, &sb.features) else {
                    bail!(
                        "--kid needs features of both sets; a statistics file without `feats` \
                         only holds mu and sigma (write it with `adt-bench fid --save-stats`)"
                    );
                };
                Some(adt_metrics::stats::kid(
                    fa,
                    fb,
                    DIMS,
                    a.kid_subsets,
                    a.kid_subset_size,
                    a.seed,
                )?)
            } else {
                None
            };
            let mut warnings = set_warnings(&sa, mode);
            warnings.extend(set_warnings(&sb, mode));
            if r.min_eigenvalue < -1e-6 * r.rank.max(1) as f64 {
                warnings.push(format!(
                    "the square root met a negative eigenvalue {:.3e} (clamped to 0)",
                    r.min_eigenvalue
                ));
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "fid": r.fid,
                        "mode": mode.name(),
                        "mode_description": mode.describe(),
                        "weights_sha256": sa.weights.as_ref().or(sb.weights.as_ref()),
                        "a": { "input": sa.label, "n": sa.count, "cached": sa.cached },
                        "b": { "input": sb.label, "n": sb.count, "cached": sb.cached },
                        "diagnostics": r,
                        "trace_sqrt_seconds": fid_s,
                        "kid": kid,
                        "warnings": warnings,
                    }))?
                );
            } else {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "FID {:.4}  (mode {mode}; {} vs {} images)",
                    r.fid,
                    sa.count.map_or("?".into(), |n| n.to_string()),
                    sb.count.map_or("?".into(), |n| n.to_string())
                );
                if let Some(k) = kid {
                    println!(
                        "KID {:.6} ± {:.6}  ({} subsets of {}, seed {})",
                        k.kid, k.std, k.subsets, k.subset_size, k.seed
                    );
                }
            }
            Ok(())
        }
        (None, _) => bail!(
            "give two inputs (image folders, .npz statistics files or builtin:shapes), or one \
             with --save-stats FILE.npz"
        ),
    }
}
