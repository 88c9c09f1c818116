//! Report snapshots for CI: a normalised, sorted, rounded text form of a report's metrics that
//! stays the same across CPUs, thread counts and re-runs of the same configuration, for
//! snapshot tests (`insta::assert_snapshot!(adt_reports::snapshot(dir, &cfg)?)`), and the rules
//! ([`CiConfig`], a TOML file) that say which metrics are compared, how finely, and which of
//! them gate `report compare`.
//!
//! Rounding: a value with a 95 % interval keeps the digits down to one tenth of the interval's
//! width (what the run resolves; the rest is noise); a value without one keeps 4 significant
//! digits; a per-metric `digits` setting overrides both. The interval's ends are rounded to the
//! value's place.

use std::collections::BTreeMap;
use std::path::Path;

use crate::metrics::{Direction, MetricRow};
use crate::{Error, Result};

/// What a CI job compares (`adt-bench report snapshot|compare --config FILE.toml`):
///
/// ```toml
/// exclude = ["tune_*"]            # left out of snapshots and comparisons
/// gate = ["fid", "kid", "shapes_fd"]  # only these fail `report compare`
/// default_tol = 0.05              # relative slack of gated metrics not listed in [tol]
///
/// [tol]
/// fid = 0.02
///
/// [digits]                        # significant digits in snapshots
/// kid = 2
///
/// [direction]                     # for metrics adt-bench does not know
/// my_score = "higher"
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiConfig {
    /// Significant digits per metric in snapshots (default: from the interval's width, else 4).
    #[serde(default)]
    pub digits: BTreeMap<String, u32>,
    /// Metrics left out of snapshots and comparisons: names, or prefixes ending in `*`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The metrics (names or `prefix*`) whose worsening or absence fails `report compare`.
    /// Absent: every metric with a known direction gates, and any missing row fails.
    #[serde(default)]
    pub gate: Option<Vec<String>>,
    /// Relative tolerance per metric.
    #[serde(default)]
    pub tol: BTreeMap<String, f64>,
    /// Relative tolerance of metrics not in `tol` (absent: the command's `--tol`).
    #[serde(default)]
    pub default_tol: Option<f64>,
    /// Which way a metric improves (`lower` or `higher`), for metrics adt-bench does not know.
    #[serde(default)]
    pub direction: BTreeMap<String, String>,
}

fn matches(patterns: &[String], metric: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => metric.starts_with(prefix),
        None => p == metric,
    })
}

impl CiConfig {
    /// Parse the TOML form, checking every value.
    pub fn from_toml(text: &str) -> Result<CiConfig> {
        let c: CiConfig =
            toml::from_str(text).map_err(|e| Error::Invalid(format!("CI config: {e}")))?;
        for (m, t) in c
            .tol
            .iter()
            .map(|(m, t)| (m.as_str(), t))
            .chain(c.default_tol.as_ref().map(|t| ("default_tol", t)))
        {
            if !(t.is_finite() && *t >= 0.0) {
                return Err(Error::Invalid(format!(
                    "CI config: tolerance of {m} must be a finite number ≥ 0, not {t}"
                )));
            }
        }
        for (m, d) in &c.direction {
            if d != "lower" && d != "higher" {
                return Err(Error::Invalid(format!(
                    "CI config: direction of {m} must be \"lower\" or \"higher\", not {d:?}"
                )));
            }
        }
        if let Some((m, _)) = c.digits.iter().find(|(_, d)| !(1..=17).contains(*d)) {
            return Err(Error::Invalid(format!(
                "CI config: digits of {m} must be 1 to 17"
            )));
        }
        Ok(c)
    }

    /// Read a TOML file (at most 1 MiB).
    pub fn read(path: &Path) -> Result<CiConfig> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > 1 << 20 {
            return Err(Error::Invalid(format!(
                "{}: {len} bytes is too large for a CI config",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        CiConfig::from_toml(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Whether a metric is left out.
    pub fn excluded(&self, metric: &str) -> bool {
        matches(&self.exclude, metric)
    }

    /// Which way a metric improves: the config's word, else adt-bench's own.
    pub fn direction(&self, metric: &str) -> Direction {
        match self.direction.get(metric).map(String::as_str) {
            Some("lower") => Direction::Lower,
            Some("higher") => Direction::Higher,
            _ => crate::metrics::direction(metric),
        }
    }

    /// Whether a worsening (or the absence) of this metric fails a comparison.
    pub fn gates(&self, metric: &str) -> bool {
        match &self.gate {
            Some(g) => matches(g, metric),
            None => self.direction(metric) != Direction::Neither,
        }
    }

    /// The relative tolerance of a metric.
    pub fn tolerance(&self, metric: &str, fallback: f64) -> f64 {
        self.tol
            .get(metric)
            .copied()
            .or(self.default_tol)
            .unwrap_or(fallback)
    }
}

/// The power of ten of the last digit kept for a row's value.
fn place(r: &MetricRow, cfg: &CiConfig) -> Option<i32> {
    let v = r.value;
    if !v.is_finite() {
        return None;
    }
    let magnitude = |x: f64| x.abs().log10().floor() as i32;
    if let Some(d) = cfg.digits.get(&r.metric) {
        return Some(if v == 0.0 {
            0
        } else {
            magnitude(v) - (*d as i32 - 1)
        });
    }
    if let (Some(lo), Some(hi)) = (r.ci_low, r.ci_high)
        && lo.is_finite()
        && hi.is_finite()
        && hi > lo
    {
        return Some(magnitude(hi - lo) - 1);
    }
    Some(if v == 0.0 { 0 } else { magnitude(v) - 3 })
}

/// `v` rounded to 10^p, written with exactly the decimals that place needs.
fn rounded(v: f64, p: i32) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let q = 10f64.powi(p);
    let r = (v / q).round() * q;
    let s = format!("{:.*}", (-p).max(0) as usize, r);
    // No "-0" or "-0.00": the sign of a value that rounds to zero is noise.
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// The snapshot text of a report's rows (see the module's documentation).
pub fn snapshot_rows(rows: &[MetricRow], cfg: &CiConfig) -> String {
    let mut lines: Vec<(String, String)> = rows
        .iter()
        .filter(|r| !cfg.excluded(&r.metric))
        .map(|r| {
            let value = match place(r, cfg) {
                Some(p) => {
                    let mut s = rounded(r.value, p);
                    if let (Some(lo), Some(hi)) = (r.ci_low, r.ci_high) {
                        s.push_str(&format!(" [{}, {}]", rounded(lo, p), rounded(hi, p)));
                    }
                    s
                }
                None => format!("{}", r.value),
            };
            let id = format!(
                "{} {} {} → {} g{} seed {} {}",
                r.model,
                r.method,
                r.train_sampler,
                r.eval_sampler,
                r.guidance,
                r.seed.map_or_else(|| "all".into(), |s| s.to_string()),
                r.metric
            );
            (id.clone(), format!("{id} = {value} (n {})", r.n))
        })
        .collect();
    lines.sort();
    let mut out = format!(
        "# adt-bench report snapshot: {} rows; values rounded to a tenth of their 95 % \
         interval, else 4 significant digits\n",
        lines.len()
    );
    for (_, l) in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The snapshot text of a report folder (or its `metrics.csv`), for a snapshot test:
///
/// ```no_run
/// let cfg = adt_reports::CiConfig::read("ci/adt-bench.toml".as_ref()).unwrap();
/// let text = adt_reports::snapshot("runs/ci".as_ref(), &cfg).unwrap();
/// // insta::assert_snapshot!("report", text);
/// # let _ = text;
/// ```
pub fn snapshot(dir: &Path, cfg: &CiConfig) -> Result<String> {
    Ok(snapshot_rows(&crate::metrics::read(dir)?, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, value: f64, ci: Option<(f64, f64)>) -> MetricRow {
        MetricRow {
            model: "tiny".into(),
            method: "adt".into(),
            train_sampler: "ddim:4".into(),
            eval_sampler: "ddim:4".into(),
            steps: 4,
            guidance: 2.0,
            seed: None,
            metric: metric.into(),
            value,
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            n: 48,
        }
    }

    #[test]
    fn values_keep_the_digits_their_interval_resolves() {
        let cfg = CiConfig::default();
        let s = snapshot_rows(
            &[
                row("fid", 258.234_567_1, Some((252.81, 263.52))),
                row("kid", 0.012_345_678, Some((0.0101, 0.0149))),
                row("residual_noise", 3.784_347_190_072, None),
                row("fid_diff", -0.000_4, Some((-0.5, 0.5))),
                row("tune_disc_gap_last", f64::NAN, None),
            ],
            &cfg,
        );
        assert!(s.contains("fid = 258 [253, 264] (n 48)"), "{s}");
        assert!(s.contains("kid = 0.0123 [0.0101, 0.0149]"), "{s}");
        assert!(s.contains("residual_noise = 3.784 (n 48)"), "{s}");
        // A value that rounds to zero has no sign.
        assert!(s.contains("fid_diff = 0.0 [-0.5, 0.5]"), "{s}");
        assert!(s.contains("tune_disc_gap_last = NaN"), "{s}");
        // Sorted by identity, whatever the row order.
        let mut rows = vec![row("kid", 0.1, None), row("fid", 1.0, None)];
        let a = snapshot_rows(&rows, &cfg);
        rows.reverse();
        assert_eq!(a, snapshot_rows(&rows, &cfg));
    }

    #[test]
    fn noise_below_the_kept_digits_does_not_change_the_snapshot() {
        let cfg = CiConfig::default();
        // What another CPU or thread count changes: the last bits of every value.
        let a = row("fid", 258.234_567_1, Some((252.81, 263.52)));
        let b = row(
            "fid",
            258.234_567_1 * (1.0 + 1e-9),
            Some((252.81, 263.52 * (1.0 - 1e-9))),
        );
        assert_eq!(snapshot_rows(&[a], &cfg), snapshot_rows(&[b], &cfg));
        // A change the interval resolves does.
        let c = row("fid", 262.0, Some((252.81, 263.52)));
        assert_ne!(
            snapshot_rows(&[row("fid", 258.2, Some((252.81, 263.52)))], &cfg),
            snapshot_rows(&[c], &cfg)
        );
    }

    #[test]
    fn the_toml_rules_are_read_and_checked() {
        let cfg = CiConfig::from_toml(
            r#"
exclude = ["tune_*"]
gate = ["fid", "shapes_*"]
default_tol = 0.05
[tol]
fid = 0.02
[digits]
kid = 2
[direction]
my_score = "higher"
"#,
        )
        .unwrap();
        assert!(cfg.excluded("tune_disc_gap_last") && !cfg.excluded("fid"));
        assert!(cfg.gates("fid") && cfg.gates("shapes_fd") && !cfg.gates("kid"));
        assert_eq!(
            (cfg.tolerance("fid", 0.0), cfg.tolerance("kid", 0.0)),
            (0.02, 0.05)
        );
        assert_eq!(cfg.direction("my_score"), Direction::Higher);
        let s = snapshot_rows(
            &[
                row("kid", 0.012_345, Some((0.01, 0.015))),
                row("tune_x", 1.0, None),
            ],
            &cfg,
        );
        assert!(
            s.contains("kid = 0.012 [0.010, 0.015]") && !s.contains("tune_x"),
            "{s}"
        );
        for (bad, says) in [
            ("tol = { fid = -1 }", "finite number"),
            ("direction = { x = \"up\" }", "\"lower\" or \"higher\""),
            ("digits = { x = 0 }", "1 to 17"),
            ("gates = [\"fid\"]", "unknown field"),
        ] {
            let e = CiConfig::from_toml(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
