//! The benchmark's long-format metrics frame: one row per (model, method, train sampler, eval
//! sampler, steps, guidance, seed, metric). `metrics.csv` is the exact record (values written
//! with Rust's shortest round-trip formatting), `metrics.parquet` the same frame for polars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One value of the frame.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct MetricRow {
    /// Model plugin.
    pub model: String,
    /// `base`, `ft` or `adt`.
    pub method: String,
    /// The sampler the model was tuned with (`-` for the base model).
    pub train_sampler: String,
    /// The sampler of the evaluation (`-` for the tuning log's controls).
    pub eval_sampler: String,
    /// Steps of the eval sampler (0 for the tuning log's controls).
    pub steps: usize,
    /// Guidance scale of the evaluation.
    pub guidance: f32,
    /// Seed of the tune and the evaluation noise; empty (None) for a row over all seeds.
    pub seed: Option<u64>,
    /// The metric's name.
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Lower end of the 95 % interval, when there is one.
    pub ci_low: Option<f64>,
    /// Upper end of the 95 % interval, when there is one.
    pub ci_high: Option<f64>,
    /// Images (or logged values) behind the value.
    pub n: usize,
}

impl MetricRow {
    /// A cell's identity with no metric yet (value NaN, no interval, n 0); [`MetricRow::at`]
    /// fills in a metric.
    pub fn cell(
        model: &str,
        method: &str,
        train_sampler: &str,
        eval_sampler: &str,
        steps: usize,
        guidance: f32,
        seed: Option<u64>,
    ) -> MetricRow {
        MetricRow {
            model: model.into(),
            method: method.into(),
            train_sampler: train_sampler.into(),
            eval_sampler: eval_sampler.into(),
            steps,
            guidance,
            seed,
            metric: String::new(),
            value: f64::NAN,
            ci_low: None,
            ci_high: None,
            n: 0,
        }
    }

    /// This cell's row of one metric (no interval).
    pub fn at(&self, metric: &str, value: f64, n: usize) -> MetricRow {
        MetricRow {
            metric: metric.into(),
            value,
            ci_low: None,
            ci_high: None,
            n,
            ..self.clone()
        }
    }

    /// Everything but the value: what identifies the row across reports.
    pub fn key(&self) -> String {
        format!(
            "{} {} train={} eval={} guidance={} seed={} {}",
            self.model,
            self.method,
            self.train_sampler,
            self.eval_sampler,
            self.guidance,
            self.seed.map_or_else(|| "all".into(), |s| s.to_string()),
            self.metric
        )
    }
}

/// Write `metrics.csv` and (with the `parquet` feature) `metrics.parquet` into `dir`. Every row's [`MetricRow::key`] must
/// be unique (reports are compared by key).
pub fn write(rows: &[MetricRow], dir: &Path) -> Result<PathBuf> {
    let path = dir.join("metrics.csv");
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        if !seen.insert(r.key()) {
            return Err(Error::Invalid(format!("two rows for `{}`", r.key())));
        }
    }
    let ce = |source| Error::Csv {
        path: path.clone(),
        source,
    };
    let mut w = csv::Writer::from_path(&path).map_err(ce)?;
    for r in rows {
        w.serialize(r).map_err(ce)?;
    }
    w.flush().map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    drop(w);
    #[cfg(feature = "parquet")]
    crate::csv_to_parquet(&path)?;
    Ok(path)
}

/// Read a report's frame: a `metrics.csv` file, or a report folder holding one.
pub fn read(path: &Path) -> Result<Vec<MetricRow>> {
    let file = if path.is_dir() {
        path.join("metrics.csv")
    } else {
        path.to_path_buf()
    };
    let ce = |source| Error::Csv {
        path: file.clone(),
        source,
    };
    let mut rd = csv::Reader::from_path(&file).map_err(ce)?;
    rd.deserialize()
        .collect::<std::result::Result<_, _>>()
        .map_err(ce)
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Lower is better (FID, KID, residual noise).
    Lower,
    /// Higher is better (the recognisability accuracies).
    Higher,
    /// A control: reported when it changes, never a regression by itself.
    Neither,
}

/// The direction of a metric of `adt-bench run`.
pub fn direction(metric: &str) -> Direction {
    match metric {
        "fid" | "kid" | "residual_noise" => Direction::Lower,
        "background_accuracy" | "shape_color_accuracy" => Direction::Higher,
        _ => Direction::Neither,
    }
}

/// One difference between two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The row's key.
    pub key: String,
    /// The value in the first report (None: only in the second).
    pub a: Option<f64>,
    /// The value in the second report (None: missing there).
    pub b: Option<f64>,
    /// Worse than the tolerance allows, or missing from the second report.
    pub regression: bool,
}

/// Compare report `b` against the baseline `a`. A row of `a` is a regression in `b` when it is
/// missing there, becomes non-finite, or moves in its worse direction by more than
/// `tol · max(|a|, 1e-12)` (`tol` relative; 0 = any worsening). Every changed row is returned.
pub fn compare(a: &[MetricRow], b: &[MetricRow], tol: f64) -> Vec<Change> {
    compare_with(a, b, &crate::CiConfig::default(), tol)
}

/// [`compare`] under a CI config: excluded metrics are ignored; with a `gate` list only the
/// gated metrics can regress (by worsening beyond their own tolerance, becoming non-finite, or
/// going missing), the others are listed as changes; each metric's tolerance is the config's,
/// else `tol`.
pub fn compare_with(
    a: &[MetricRow],
    b: &[MetricRow],
    cfg: &crate::CiConfig,
    tol: f64,
) -> Vec<Change> {
    let index = |rows: &[MetricRow]| -> BTreeMap<String, (String, f64)> {
        rows.iter()
            .filter(|r| !cfg.excluded(&r.metric))
            .map(|r| (r.key(), (r.metric.clone(), r.value)))
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    // Without a gate list every row counts as before: any missing or non-finite row fails.
    let counts = |metric: &str| cfg.gate.is_none() || cfg.gates(metric);
    let mut out = Vec::new();
    for (key, (metric, va)) in &ia {
        let Some((_, vb)) = ib.get(key) else {
            out.push(Change {
                key: key.clone(),
                a: Some(*va),
                b: None,
                regression: counts(metric),
            });
            continue;
        };
        let same = va == vb || (va.is_nan() && vb.is_nan());
        if same {
            continue;
        }
        let slack = cfg.tolerance(metric, tol) * va.abs().max(1e-12);
        let worse = match cfg.direction(metric) {
            Direction::Lower => *vb > va + slack,
            Direction::Higher => *vb < va - slack,
            Direction::Neither => false,
        };
        let regression =
            counts(metric) && ((va.is_finite() && !vb.is_finite()) || (cfg.gates(metric) && worse));
        out.push(Change {
            key: key.clone(),
            a: Some(*va),
            b: Some(*vb),
            regression,
        });
    }
    for (key, (_, vb)) in &ib {
        if !ia.contains_key(key) {
            out.push(Change {
                key: key.clone(),
                a: None,
                b: Some(*vb),
                regression: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, metric: &str, value: f64) -> MetricRow {
        MetricRow {
            model: "tiny".into(),
            method: method.into(),
            train_sampler: "ddim:10".into(),
            eval_sampler: "ddim:10".into(),
            steps: 10,
            guidance: 2.0,
            seed: Some(0),
            metric: metric.into(),
            value,
            ci_low: None,
            ci_high: Some(1.5),
            n: 64,
        }
    }

    #[test]
    fn the_frame_round_trips_through_csv_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            row("adt", "fid", 215.714_634_123_456_8),
            row("ft", "kid", 0.1),
            row("ft", "tune_disc_gap_last", f64::NAN),
            MetricRow {
                seed: None,
                ci_low: Some(-3.25),
                ..row("adt-ft", "fid_diff", -1.5)
            },
        ];
        write(&rows, dir.path()).unwrap();
        let back = read(dir.path()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[..2], rows[..2]);
        assert_eq!(back[3], rows[3]);
        assert!(back[2].value.is_nan());
        assert!(dir.path().join("metrics.parquet").exists());
        let dup = vec![rows[0].clone(), rows[0].clone()];
        let e = write(&dup, dir.path()).unwrap_err().to_string();
        assert!(e.contains("two rows for `tiny adt"), "{e}");
    }

    #[test]
    fn compare_flags_worsening_beyond_the_tolerance_and_missing_rows_only() {
        let a = vec![
            row("adt", "fid", 200.0),
            row("adt", "background_accuracy", 0.9),
            row("adt", "tune_loss_diff_last", 0.05),
            row("ft", "fid", 210.0),
        ];
        assert!(compare(&a, &a, 0.0).is_empty(), "identical reports");
        let mut b = a.clone();
        b[0].value = 201.0; // FID +0.5 %
        b[1].value = 0.95; // accuracy up: an improvement
        b[2].value = 0.5; // a control moved: reported, not a regression
        b.pop(); // ft's FID missing
        let c = compare(&a, &b, 0.01);
        let reg: Vec<&str> = c
            .iter()
            .filter(|c| c.regression)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(
            reg,
            ["tiny ft train=ddim:10 eval=ddim:10 guidance=2 seed=0 fid"]
        );
        assert_eq!(c.len(), 4);
        // With no tolerance the +0.5 % FID is a regression too.
        assert_eq!(
            compare(&a, &b, 0.0).iter().filter(|c| c.regression).count(),
            2
        );
        // Lower accuracy and a NaN FID are regressions.
        let mut d = a.clone();
        d[1].value = 0.8;
        d[3].value = f64::NAN;
        assert_eq!(
            compare(&a, &d, 0.05)
                .iter()
                .filter(|c| c.regression)
                .count(),
            2
        );
    }
}
