//! FID and KID rows with bootstrap 95 % intervals: per seed (images resampled), over seeds
//! (seeds and images resampled, two-stage), and the paired difference ADT − FT (the same
//! resampled image indices and real images on both sides: sample i of ADT and of FT share the
//! caption and the initial noise).

use std::collections::BTreeMap;

use anyhow::Context;
use rand::SeedableRng;

use adt_metrics::arch::DIMS;
use adt_metrics::bootstrap::{GramSets, centred_interval, over_seeds, resample};

use super::MetricRow;

/// One evaluated cell: a model state sampled with one eval sampler and seed.
pub struct Evaluated {
    /// The cell's identity (model … seed) as a frame row; its metric and value are unused.
    pub cell: MetricRow,
    /// The cell's seed (`cell.seed`, always set here).
    pub seed: u64,
    /// Inception features, n × 2048.
    pub features: Vec<f32>,
    /// FID and KID against the real set on all images (the rows' values).
    pub fid: f64,
    pub kid: f64,
}

const LEVEL: f64 = 0.95;

fn opt(v: &[f64]) -> Option<&[f64]> {
    (!v.is_empty()).then_some(v)
}

fn seed_of(parts: &[&str]) -> u64 {
    // A fixed, documented stream per group: FNV-1a of the group's names.
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The cell's row with another method and seed (metric, value and n are set by [`with`]).
fn row(e: &Evaluated, method: &str, seed: Option<u64>) -> MetricRow {
    MetricRow {
        method: method.into(),
        seed,
        ..e.cell.clone()
    }
}

fn with(
    mut r: MetricRow,
    metric: &str,
    value: f64,
    reps: Option<&[f64]>,
    n: usize,
) -> anyhow::Result<MetricRow> {
    r = r.at(metric, value, n);
    if let Some(v) = reps.filter(|v| !v.is_empty()) {
        let (lo, hi) = centred_interval(value, v, LEVEL)?;
        r.ci_low = Some(lo);
        r.ci_high = Some(hi);
    }
    Ok(r)
}

/// The FID/KID rows of every evaluated cell, their means over seeds, and the paired ADT − FT
/// differences (per seed and over seeds), each with a 95 % percentile interval from `reps`
/// bootstrap replicates (none when `reps` is 0). Without the reference's features (reference
/// statistics without `feats`) there are FID rows only, without intervals.
pub fn rows(
    real: Option<&[f32]>,
    cells: &[Evaluated],
    reps: usize,
    quiet: bool,
) -> anyhow::Result<Vec<MetricRow>> {
    let (real, reps) = match real {
        Some(r) => (r, reps),
        None => (&[][..], 0),
    };
    let with_kid = !real.is_empty();
    let n_real = real.len() / DIMS;
    // Replicates per cell: cells of one (model, eval sampler, seed) share a Gram matrix and,
    // in replicate b, the resampled real and generated indices.
    let mut fid_reps: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let mut kid_reps: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let mut groups: BTreeMap<(String, String, u64), Vec<usize>> = BTreeMap::new();
    for (i, c) in cells.iter().enumerate() {
        groups
            .entry((c.cell.model.clone(), c.cell.eval_sampler.clone(), c.seed))
            .or_default()
            .push(i);
    }
    let bar = crate::progress::Bar::new(
        (groups.len() * reps) as u64,
        "bootstrap replicates",
        quiet || reps == 0,
    );
    if reps > 0 {
        for ((model, es, seed), members) in &groups {
            let n = cells[members[0]].features.len() / DIMS;
            if members.iter().any(|&i| cells[i].features.len() != n * DIMS) {
                anyhow::bail!("the cells of {model} / {es} / seed {seed} differ in size");
            }
            let mut sets: Vec<&[f32]> = vec![real];
            sets.extend(members.iter().map(|&i| cells[i].features.as_slice()));
            let gram = GramSets::new(&sets, DIMS)?;
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(seed_of(&[model, es, &seed.to_string()]));
            for _ in 0..reps {
                let ri = resample(&mut rng, n_real);
                let gi = resample(&mut rng, n);
                for (k, &m) in members.iter().enumerate() {
                    let start = gram.rows(k + 1).start;
                    let idx: Vec<usize> = gi.iter().map(|&i| start + i).collect();
                    fid_reps[m].push(gram.fid(&ri, &idx)?);
                    kid_reps[m].push(gram.kid(&ri, &idx)?);
                }
                bar.inc();
            }
        }
    }
    bar.finish();

    // Each metric: its name, its value on a cell, its replicates per cell.
    type Point = fn(&Evaluated) -> f64;
    let all: [(&str, Point, &Vec<Vec<f64>>); 2] =
        [("fid", |c| c.fid, &fid_reps), ("kid", |c| c.kid, &kid_reps)];
    let metrics = &all[..if with_kid { 2 } else { 1 }];
    let size = |i: usize| cells[i].features.len() / DIMS;

    let mut out = Vec::new();
    // Per seed.
    for (i, c) in cells.iter().enumerate() {
        for &(metric, point, rep) in metrics {
            out.push(with(
                row(c, &c.cell.method, Some(c.seed)),
                metric,
                point(c),
                opt(&rep[i]),
                size(i),
            )?);
        }
    }
    // Over seeds: (model, method, train, eval) → cell indices in seed order.
    let mut by_state: BTreeMap<(&str, &str, &str, &str), Vec<usize>> = BTreeMap::new();
    for (i, c) in cells.iter().enumerate() {
        by_state
            .entry((
                &c.cell.model,
                &c.cell.method,
                &c.cell.train_sampler,
                &c.cell.eval_sampler,
            ))
            .or_default()
            .push(i);
    }
    for ((model, method, ts, es), idx) in &by_state {
        let c0 = &cells[idx[0]];
        let n: usize = idx.iter().map(|&i| size(i)).sum();
        for &(metric, point, rep) in metrics {
            let point: Vec<f64> = idx.iter().map(|&i| point(&cells[i])).collect();
            let per_seed: Vec<Vec<f64>> = idx.iter().map(|&i| rep[i].clone()).collect();
            let r = over_seeds(
                &per_seed,
                reps,
                seed_of(&[model, method, ts, es, metric, "seeds"]),
            );
            out.push(with(
                row(c0, method, None),
                metric,
                mean(&point),
                opt(&r),
                n,
            )?);
        }
    }
    // Paired ADT − FT, per seed and over seeds.
    for ((model, method, ts, es), adt) in &by_state {
        if *method != "adt" {
            continue;
        }
        let Some(ft) = by_state.get(&(*model, "ft", *ts, *es)) else {
            continue;
        };
        let seeds_of = |v: &[usize]| v.iter().map(|&i| cells[i].seed).collect::<Vec<_>>();
        if seeds_of(adt) != seeds_of(ft) {
            continue;
        }
        for &(base, point, rep) in metrics {
            let metric = &format!("{base}_diff");
            let mut per_seed = Vec::new();
            let mut points = Vec::new();
            for (&a, &f) in adt.iter().zip(ft) {
                let d: Vec<f64> = rep[a].iter().zip(&rep[f]).map(|(x, y)| x - y).collect();
                let p = point(&cells[a]) - point(&cells[f]);
                out.push(with(
                    row(&cells[a], "adt-ft", Some(cells[a].seed)),
                    metric,
                    p,
                    opt(&d),
                    size(a),
                )?);
                per_seed.push(d);
                points.push(p);
            }
            let r = over_seeds(&per_seed, reps, seed_of(&[model, ts, es, metric, "paired"]));
            let n = adt.iter().map(|&i| size(i)).sum::<usize>();
            out.push(
                with(
                    row(&cells[adt[0]], "adt-ft", None),
                    metric,
                    mean(&points),
                    opt(&r),
                    n,
                )
                .context("paired interval")?,
            );
        }
    }
    Ok(out)
}

fn is_control(r: &MetricRow) -> bool {
    r.seed.is_some()
        && !r.metric.starts_with("fid")
        && !r.metric.starts_with("kid")
        && adt_metrics::clip::Metric::parse(r.metric.trim_end_matches("_diff")).is_none()
}

/// One cell's per-image scores of one CLIP-based metric (for the over-seeds rows).
pub struct ScoredCell {
    /// The cell (with its seed).
    pub cell: MetricRow,
    /// Metric name.
    pub metric: String,
    /// Per image.
    pub per_sample: Vec<f64>,
}

/// Over-seeds rows of the CLIP-based scores: the mean of the seeds' values with a two-stage
/// bootstrap interval (seeds, then images); CLIP score's mean clamped at 0 as torchmetrics.
pub fn score_rows(cells: &[ScoredCell], reps: usize) -> anyhow::Result<Vec<MetricRow>> {
    use adt_metrics::bootstrap::{mean_replicates, over_seeds, percentile_interval};
    let mut groups: BTreeMap<String, (MetricRow, Vec<&ScoredCell>)> = BTreeMap::new();
    for c in cells {
        let k = MetricRow {
            seed: None,
            ..c.cell.at(&c.metric, 0.0, 0)
        };
        groups
            .entry(k.key())
            .or_insert_with(|| (k, Vec::new()))
            .1
            .push(c);
    }
    // torchmetrics' clamp applies to CLIP score itself, not to paired differences.
    let clamp = |m: &str, v: f64| if m == "clipscore" { v.max(0.0) } else { v };
    let mut out = Vec::new();
    for (key, (mut row, members)) in groups {
        let per_seed_values: Vec<f64> = members
            .iter()
            .map(|c| {
                clamp(
                    &c.metric,
                    c.per_sample.iter().sum::<f64>() / c.per_sample.len().max(1) as f64,
                )
            })
            .collect();
        row.value = per_seed_values.iter().sum::<f64>() / per_seed_values.len() as f64;
        row.n = members.iter().map(|c| c.per_sample.len()).sum();
        if reps > 0 {
            let seed = key
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            let per_seed: Vec<Vec<f64>> = members
                .iter()
                .map(|c| {
                    mean_replicates(&c.per_sample, reps, seed)
                        .into_iter()
                        .map(|v| clamp(&c.metric, v))
                        .collect()
                })
                .collect();
            let r = over_seeds(&per_seed, reps, seed);
            let (lo, hi) = percentile_interval(&r, 0.95)?;
            row.ci_low = Some(lo);
            row.ci_high = Some(hi);
        }
        out.push(row);
    }
    Ok(out)
}

/// Means over seeds (no interval) of the per-seed control rows (everything but FID/KID and
/// their paired differences, which [`rows`] aggregates with intervals), so every
/// seed-aggregated FID has its controls beside it.
pub fn seed_means_of_controls(rows: &[MetricRow]) -> Vec<MetricRow> {
    // (row over seeds, Σ value, count), in first-seen order for a stable frame.
    let mut out: Vec<(MetricRow, f64, usize)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| is_control(r)) {
        let k = MetricRow {
            seed: None,
            ..r.clone()
        };
        match index.get(&k.key()) {
            Some(&i) => {
                out[i].0.n += r.n;
                out[i].1 += r.value;
                out[i].2 += 1;
            }
            None => {
                index.insert(k.key(), out.len());
                out.push((k, r.value, 1));
            }
        }
    }
    out.into_iter()
        .map(|(mut r, sum, count)| {
            r.value = sum / count as f64;
            r
        })
        .collect()
}

/// z-quantiles of a two-sided 5 % test with 80 % power: the minimum detectable difference is
/// (z₀.₉₇₅ + z₀.₈) standard errors.
const MDD_Z: f64 = Z975 + 0.841_621_234;

/// The standard normal's 97.5 % quantile.
const Z975: f64 = 1.959_963_985;

/// Whether two rows are of the same model, train sampler and eval sampler.
fn same_cell(a: &MetricRow, b: &MetricRow) -> bool {
    a.model == b.model && a.train_sampler == b.train_sampler && a.eval_sampler == b.eval_sampler
}

/// What the paired FID/KID differences over seeds mean, as rows of the `adt-ft` cells:
/// * `{m}_diff_t` — the mean of the per-seed differences with a Student-t 95 % interval over
///   seeds (seed-to-seed spread only; needs two seeds or more), beside the bootstrap's;
/// * `{m}_diff_mdd` — the minimum detectable difference at this n and these seeds: 2.80
///   standard errors of the bootstrap over seeds (the interval's half-width / 1.96), the
///   smallest true difference a 5 % two-sided test finds with 80 % power;
/// * `{m}_gap_closed` — (FT − ADT) / (FT − floor), FT's distance above the real-vs-real
///   floor that ADT removes (1 = down to the floor; negative = worse than FT), when the run
///   has a floor.
pub fn power_rows(rows: &[MetricRow]) -> anyhow::Result<Vec<MetricRow>> {
    let mut out = Vec::new();
    for d in rows
        .iter()
        .filter(|r| r.method == "adt-ft" && r.seed.is_none())
    {
        let Some(base) = ["fid", "kid"]
            .into_iter()
            .find(|m| d.metric == format!("{m}_diff"))
        else {
            continue;
        };
        let same = |r: &MetricRow| same_cell(r, d);
        let per_seed: Vec<f64> = rows
            .iter()
            .filter(|r| r.method == "adt-ft" && r.seed.is_some() && r.metric == d.metric && same(r))
            .map(|r| r.value)
            .collect();
        if let Some((mean, lo, hi)) = t_interval(&per_seed)? {
            let mut r = d.at(&format!("{base}_diff_t"), mean, d.n);
            (r.ci_low, r.ci_high) = (Some(lo), Some(hi));
            out.push(r);
        }
        if let (Some(lo), Some(hi)) = (d.ci_low, d.ci_high) {
            let se = (hi - lo) / 2.0 / Z975;
            out.push(d.at(&format!("{base}_diff_mdd"), MDD_Z * se, d.n));
        }
        if base == "fid" {
            // The independent encoder's distances, paired per seed like FID's.
            for m in ["shapes_fd", "shapes_kid"] {
                out.extend(independent_diff_rows(rows, d, m)?);
            }
        }
        let ft = rows
            .iter()
            .find(|r| r.method == "ft" && r.seed.is_none() && r.metric == base && same(r));
        out.extend(gap_closed(rows, d, base, ft, d.value, d.n));
    }
    Ok(out)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The mean of `v` with a Student-t 95 % interval, for two values or more.
fn t_interval(v: &[f64]) -> anyhow::Result<Option<(f64, f64, f64)>> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let k = v.len();
    if k < 2 {
        return Ok(None);
    }
    let mean = mean(v);
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (k - 1) as f64)
        .map_err(|e| anyhow::anyhow!("t distribution: {e}"))?
        .inverse_cdf(0.975);
    let half = t * (var / k as f64).sqrt();
    Ok(Some((mean, mean - half, mean + half)))
}

/// ADT − FT of a per-seed distance `metric` (the independent encoder's) for the cells of the
/// paired row `d`: one row per seed both methods have, their mean over seeds with a t
/// interval, and the share of FT's distance to the floor that ADT closes.
fn independent_diff_rows(
    rows: &[MetricRow],
    d: &MetricRow,
    metric: &str,
) -> anyhow::Result<Vec<MetricRow>> {
    let same = |r: &MetricRow| same_cell(r, d) && r.metric == metric;
    let find = |method: &str, seed: Option<u64>| {
        rows.iter()
            .find(|r| r.method == method && r.seed == seed && same(r))
    };
    let mut out = Vec::new();
    let mut diffs = Vec::new();
    let mut n = 0;
    for a in rows
        .iter()
        .filter(|r| r.method == "adt" && r.seed.is_some() && same(r))
    {
        if let Some(f) = find("ft", a.seed) {
            let v = a.value - f.value;
            let mut r = d.at(&format!("{metric}_diff"), v, a.n);
            r.seed = a.seed;
            out.push(r);
            diffs.push(v);
            n += a.n;
        }
    }
    if diffs.is_empty() {
        return Ok(out);
    }
    let mut over = d.at(&format!("{metric}_diff"), mean(&diffs), n);
    if let Some((_, lo, hi)) = t_interval(&diffs)? {
        (over.ci_low, over.ci_high) = (Some(lo), Some(hi));
    }
    let mean = over.value;
    out.push(over);
    out.extend(gap_closed(rows, d, metric, find("ft", None), mean, n));
    Ok(out)
}

/// `{metric}_gap_closed` = −diff / (FT − floor), the share of FT's distance above the floor
/// that ADT removes, when FT's row and the model's floor row are there.
fn gap_closed(
    rows: &[MetricRow],
    d: &MetricRow,
    metric: &str,
    ft: Option<&MetricRow>,
    diff: f64,
    n: usize,
) -> Option<MetricRow> {
    let floor = rows
        .iter()
        .find(|r| r.method == "floor" && r.model == d.model && r.metric == metric)?;
    let room = ft?.value - floor.value;
    (room.abs() > 0.0).then(|| d.at(&format!("{metric}_gap_closed"), -diff / room, n))
}

/// Paired ADT − FT differences of the CLIP-based scores: per image i, ADT's sample i minus
/// FT's (same caption and initial noise), as cells of method `adt-ft` and metric
/// `{metric}_diff`; per-seed rows (images resampled, the same indices on both sides since the
/// difference is taken per image) and, through [`score_rows`], over-seeds rows.
pub fn score_diff_rows(cells: &[ScoredCell], reps: usize) -> anyhow::Result<Vec<MetricRow>> {
    use adt_metrics::bootstrap::{mean_replicates, percentile_interval};
    let key = |c: &ScoredCell, method: &str| {
        (
            c.cell.model.clone(),
            method.to_string(),
            c.cell.train_sampler.clone(),
            c.cell.eval_sampler.clone(),
            c.cell.seed,
            c.metric.clone(),
        )
    };
    let index: BTreeMap<_, &ScoredCell> =
        cells.iter().map(|c| (key(c, &c.cell.method), c)).collect();
    let mut diffs = Vec::new();
    for a in cells.iter().filter(|c| c.cell.method == "adt") {
        let Some(f) = index.get(&key(a, "ft")) else {
            continue;
        };
        if a.per_sample.len() != f.per_sample.len() {
            continue;
        }
        diffs.push(ScoredCell {
            cell: MetricRow {
                method: "adt-ft".into(),
                ..a.cell.clone()
            },
            metric: format!("{}_diff", a.metric),
            per_sample: a
                .per_sample
                .iter()
                .zip(&f.per_sample)
                .map(|(x, y)| x - y)
                .collect(),
        });
    }
    let mut out = Vec::new();
    for d in &diffs {
        let n = d.per_sample.len();
        let mut r = d.cell.at(
            &d.metric,
            d.per_sample.iter().sum::<f64>() / n.max(1) as f64,
            n,
        );
        if reps > 0 {
            let seed = r
                .key()
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            let (lo, hi) = percentile_interval(&mean_replicates(&d.per_sample, reps, seed), 0.95)?;
            (r.ci_low, r.ci_high) = (Some(lo), Some(hi));
        }
        out.push(r);
    }
    out.extend(score_rows(&diffs, reps)?);
    Ok(out)
}

/// The distances the few-step gap is given for.
const GAP_METRICS: &[&str] = &["fid", "kid", "shapes_fd", "shapes_kid"];

/// The base model's few-step gap, as cells of method `few-step-gap` whose train sampler is the
/// reference: for each of a model's eval samplers, the base model's distance there minus its
/// distance at the reference sampler `(model, reference)`, paired by seed (the same captions
/// and real images; the reference runs on the first seed) and averaged over the seeds that
/// have both. It is the room a tune can close at that sampler.
pub fn step_gap_rows(rows: &[MetricRow], references: &[(String, String)]) -> Vec<MetricRow> {
    let mut out = Vec::new();
    for (model, reference) in references {
        let base = |r: &&MetricRow| {
            r.model == *model
                && r.method == "base"
                && r.seed.is_some()
                && GAP_METRICS.contains(&r.metric.as_str())
        };
        let at_ref: BTreeMap<(u64, &str), f64> = rows
            .iter()
            .filter(base)
            .filter(|r| r.eval_sampler == *reference)
            .filter_map(|r| Some(((r.seed?, r.metric.as_str()), r.value)))
            .collect();
        // (eval sampler, metric) → (a row of the cell, Σ difference, images, count)
        let mut gaps: BTreeMap<(&str, &str), (&MetricRow, f64, usize, usize)> = BTreeMap::new();
        for r in rows
            .iter()
            .filter(base)
            .filter(|r| r.eval_sampler != *reference)
        {
            let Some(v) = r.seed.and_then(|s| at_ref.get(&(s, r.metric.as_str()))) else {
                continue;
            };
            let e = gaps
                .entry((&r.eval_sampler, &r.metric))
                .or_insert((r, 0.0, 0, 0));
            e.1 += r.value - v;
            e.2 += r.n;
            e.3 += 1;
        }
        for ((_, metric), (r, sum, n, count)) in gaps {
            let cell = MetricRow {
                method: "few-step-gap".into(),
                train_sampler: reference.clone(),
                seed: None,
                ..r.clone()
            };
            out.push(cell.at(metric, sum / count as f64, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn feats(n: usize, seed: u64, shift: f32) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * DIMS).map(|_| rng.random::<f32>() + shift).collect()
    }

    fn cell(method: &str, seed: u64, features: Vec<f32>, real: &[f32]) -> Evaluated {
        let g = GramSets::new(&[real, &features], DIMS).unwrap();
        let (r, c): (Vec<usize>, Vec<usize>) = (g.rows(0).collect(), g.rows(1).collect());
        Evaluated {
            cell: MetricRow::cell("tiny", method, "ddim:10", "ddim:10", 10, 2.0, Some(seed)),
            seed,
            fid: g.fid(&r, &c).unwrap(),
            kid: g.kid(&r, &c).unwrap(),
            features,
        }
    }

    /// The few-step gap pairs the base model's rows by seed with its reference-sampler rows
    /// and leaves everything else alone.
    #[test]
    fn the_step_gap_pairs_base_rows_with_the_reference_by_seed() {
        let c = |method: &str, es: &str, seed: Option<u64>| {
            MetricRow::cell("tiny", method, "-", es, 4, 2.0, seed)
        };
        let rows = vec![
            c("base", "ddim:50", Some(0)).at("fid", 100.0, 48),
            c("base", "ddim:50", Some(0)).at("shapes_fd", 10.0, 48),
            c("base", "ddim:4", Some(0)).at("fid", 130.0, 48),
            c("base", "ddim:4", Some(1)).at("fid", 170.0, 48),
            c("base", "ddim:4", Some(0)).at("shapes_fd", 25.0, 48),
            c("base", "dpm++2m:4", Some(0)).at("fid", 120.0, 48),
            c("base", "dpm++2m:4", Some(0)).at("residual_noise", 4.0, 48),
            c("ft", "ddim:4", Some(0)).at("fid", 90.0, 48),
            c("base", "ddim:4", None).at("fid", 150.0, 96),
        ];
        let g = step_gap_rows(&rows, &[("tiny".into(), "ddim:50".into())]);
        let get = |es: &str, m: &str| {
            g.iter()
                .find(|r| r.eval_sampler == es && r.metric == m)
                .map(|r| {
                    (
                        r.value,
                        r.n,
                        r.method.as_str(),
                        r.train_sampler.as_str(),
                        r.seed,
                    )
                })
        };
        // Seed 1 has no reference sample: only seed 0 is paired.
        assert_eq!(
            get("ddim:4", "fid"),
            Some((30.0, 48, "few-step-gap", "ddim:50", None))
        );
        assert_eq!(get("ddim:4", "shapes_fd").map(|v| v.0), Some(15.0));
        assert_eq!(get("dpm++2m:4", "fid").map(|v| v.0), Some(20.0));
        assert_eq!(g.len(), 3, "{g:#?}");
        assert!(step_gap_rows(&rows, &[("other".into(), "ddim:50".into())]).is_empty());
    }

    /// The t interval, the detectable difference and the gap closed, against values worked
    /// out by hand (t₀.₉₇₅ with 2 degrees of freedom = 4.302653).
    #[test]
    fn power_rows_read_the_differences_against_seeds_and_the_floor() {
        let c = |method: &str, seed: Option<u64>| {
            MetricRow::cell("tiny", method, "ddim:4", "ddim:4", 4, 2.0, seed)
        };
        let mut rows = vec![
            c("ft", None).at("fid", 100.0, 96),
            c("floor", None).at("fid", 20.0, 48),
        ];
        rows[1].train_sampler = "-".into();
        rows[1].eval_sampler = "real".into();
        for (s, v) in [(0, -2.0), (1, -4.0), (2, -3.0)] {
            rows.push(c("adt-ft", Some(s)).at("fid_diff", v, 48));
        }
        let mut over = c("adt-ft", None).at("fid_diff", -3.0, 144);
        (over.ci_low, over.ci_high) = (Some(-5.0), Some(-1.0));
        rows.push(over);
        let out = power_rows(&rows).unwrap();
        let get = |m: &str| {
            out.iter()
                .find(|r| r.metric == m)
                .unwrap_or_else(|| panic!("{m}"))
        };
        let t = get("fid_diff_t");
        let half = 4.302_653 / 3f64.sqrt();
        assert!((t.value + 3.0).abs() < 1e-12);
        assert!((t.ci_low.unwrap() - (-3.0 - half)).abs() < 1e-5, "{t:?}");
        assert!((t.ci_high.unwrap() - (-3.0 + half)).abs() < 1e-5, "{t:?}");
        let mdd = get("fid_diff_mdd").value;
        assert!((mdd - 2.801_585 * 2.0 / 1.959_964).abs() < 1e-5, "{mdd}");
        assert!((get("fid_gap_closed").value - 3.0 / 80.0).abs() < 1e-12);
        // Without a floor row there is no gap closed; with one seed no t interval.
        let no_floor: Vec<MetricRow> = rows
            .iter()
            .filter(|r| r.method != "floor")
            .cloned()
            .collect();
        assert!(
            power_rows(&no_floor)
                .unwrap()
                .iter()
                .all(|r| r.metric != "fid_gap_closed")
        );
        let one_seed: Vec<MetricRow> = rows
            .iter()
            .filter(|r| r.seed.is_none_or(|s| s == 0))
            .cloned()
            .collect();
        assert!(
            power_rows(&one_seed)
                .unwrap()
                .iter()
                .all(|r| r.metric != "fid_diff_t")
        );
    }

    /// Identical ADT and FT samples: every paired replicate is exactly 0 (the same resampled
    /// indices on both sides), while each method's own interval has width.
    #[test]
    fn paired_replicates_share_their_resampled_images() {
        let n = 8;
        let real = feats(n, 1, 0.0);
        let mut cells = Vec::new();
        for seed in [0, 1] {
            let f = feats(n, 10 + seed, 0.05);
            cells.push(cell("ft", seed, f.clone(), &real));
            cells.push(cell("adt", seed, f, &real));
        }
        let rows = rows(Some(&real), &cells, 200, true).unwrap();
        let find = |method: &str, seed: Option<u64>, metric: &str| {
            rows.iter()
                .find(|r| r.method == method && r.seed == seed && r.metric == metric)
                .unwrap_or_else(|| panic!("{method} {seed:?} {metric}"))
                .clone()
        };
        for seed in [Some(0), Some(1), None] {
            let d = find("adt-ft", seed, "fid_diff");
            assert_eq!((d.value, d.ci_low, d.ci_high), (0.0, Some(0.0), Some(0.0)));
            let f = find("ft", seed, "fid");
            let (lo, hi) = (f.ci_low.unwrap(), f.ci_high.unwrap());
            assert!(lo < f.value && f.value < hi, "{f:?}");
        }
        // Over seeds: the mean of the per-seed values, and n counts every image.
        let over = find("ft", None, "fid");
        assert!((over.value - (cells[0].fid + cells[2].fid) / 2.0).abs() < 1e-12);
        assert_eq!(over.n, 2 * n);
        // No replicates: values without intervals.
        let plain = super::rows(Some(&real), &cells, 0, true).unwrap();
        assert!(plain.iter().all(|r| r.ci_low.is_none()));
    }
}
