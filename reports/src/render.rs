//! The report of `adt-bench run` as markdown and as one self-contained HTML file (tables,
//! inline SVG plots, sample grids embedded as base64 PNG; no scripts, no external requests).
//!
//! Both renderings are built from the same [`Table`]s, which come from the metrics frame
//! ([`tables`]); the plots ([`Plot`], [`svg_lines`], [`svg_intervals`], [`svg_heatmap`]) are
//! plain SVG so the file opens anywhere, offline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::Engine as _;

use crate::metrics::MetricRow;

/// What the report is about (the frame does not say).
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The first paragraph: images per cell, seeds, FID mode, caveats.
    pub intro: String,
    /// Methods in the order the user gave them (tables follow it).
    pub methods: Vec<String>,
}

/// A table: title, header, rows of cells, a note below.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub note: String,
}

/// One line of a line plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed (for references and analytic curves).
    pub dashed: bool,
}

/// A line plot.
#[derive(Debug, Clone)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_y: bool,
    /// A sentence under the plot.
    pub caption: String,
}

/// One entry of an interval plot: label, value, interval ends.
pub type Interval = (String, f64, Option<f64>, Option<f64>);

/// A PNG image (a sample grid) with its caption.
#[derive(Debug, Clone)]
pub struct Figure {
    pub caption: String,
    pub png: Vec<u8>,
}

fn fmt_value(metric: &str, v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    match metric {
        "hpsv2" | "hpsv2_diff" => format!("{v:.4}"),
        m if m.starts_with("kid") => format!("{v:.4}"),
        "aesthetic" | "pickscore" | "aesthetic_diff" | "pickscore_diff" => format!("{v:.3}"),
        m if m.ends_with("accuracy") => format!("{v:.3}"),
        m if m.starts_with("tune_") => format!("{v:.4}"),
        _ => format!("{v:.2}"),
    }
}

/// `value [low, high]`, or the value alone without an interval.
pub fn with_interval(r: &MetricRow) -> String {
    match (r.ci_low, r.ci_high) {
        (Some(lo), Some(hi)) => format!(
            "{} [{}, {}]",
            fmt_value(&r.metric, r.value),
            fmt_value(&r.metric, lo),
            fmt_value(&r.metric, hi)
        ),
        _ => fmt_value(&r.metric, r.value),
    }
}

type CellKey = (String, usize, String, String, String);

/// Rows grouped by (model, method rank, method, train sampler, eval sampler) → metric → row,
/// for one seed selection (`None`: the rows over all seeds).
fn cells(
    rows: &[MetricRow],
    meta: &Meta,
    seed: Option<u64>,
) -> BTreeMap<CellKey, BTreeMap<String, MetricRow>> {
    let rank = |m: &str| {
        meta.methods
            .iter()
            .position(|x| x == m)
            .unwrap_or(usize::MAX)
    };
    let mut out: BTreeMap<CellKey, BTreeMap<String, MetricRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.seed == seed) {
        out.entry((
            r.model.clone(),
            rank(&r.method),
            r.method.clone(),
            r.train_sampler.clone(),
            r.eval_sampler.clone(),
        ))
        .or_default()
        .insert(r.metric.clone(), r.clone());
    }
    out
}

/// Methods of rows that are not a model state (differences, the real-vs-real floor, the base
/// model's few-step gap): left out of the transfer matrix.
const NOT_MODEL_STATES: [&str; 3] = ["adt-ft", "floor", "few-step-gap"];

/// The report's tables, from the metrics frame.
pub fn tables(rows: &[MetricRow], meta: &Meta) -> Vec<Table> {
    let all = cells(rows, meta, None);
    let get = |m: &BTreeMap<String, MetricRow>, k: &str| {
        m.get(k).map(with_interval).unwrap_or_else(|| "—".into())
    };
    let mut out = Vec::new();

    // 1. Mean over seeds with intervals, controls beside.
    let mut t = Table {
        title: "FID and KID (mean over seeds, 95 % interval) with controls".into(),
        header: [
            "model",
            "method",
            "train sampler",
            "eval sampler",
            "FID",
            "KID",
            "FD, indep. encoder",
            "background acc.",
            "shape-colour acc.",
            "residual noise",
            "L_diff drift",
            "colour-mean err.",
            "D gap",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        note: "Intervals: bootstrap percentile intervals (seeds and images resampled, two-stage) \
               centred on the estimate (the upward shift that duplicated images cause is removed). \
               Background / shape-colour accuracy: the image's border colour / a region of the \
               shape's colour match the caption. Residual noise: mean |pixel − 3×3 box blur| \
               (0–255). From the tuning log (last tenth; drift = last − first tenth): L_diff \
               drift, the colour-mean error of x̂0 (0–1), the discriminator's real − generated \
               gap. `floor`: a second real image of each caption against the reference at the \
               same n — the value a perfect model would get here. FD, indep. encoder: the \
               Fréchet distance on an encoder of the built-in shapes trained apart from the \
               discriminator's backbone (other initialisation, disjoint examples)."
            .into(),
    };
    for ((m, rk, me, ts, es), v) in &all {
        if es == "-" || me == "adt-ft" || me == "few-step-gap" {
            continue;
        }
        let log = all.get(&(m.clone(), *rk, me.clone(), ts.clone(), "-".to_string()));
        let last =
            |k: &str| -> Option<f64> { log?.get(&format!("tune_{k}_last")).map(|r| r.value) };
        let first =
            |k: &str| -> Option<f64> { log?.get(&format!("tune_{k}_first")).map(|r| r.value) };
        let show = |v: Option<f64>, plus: bool| match v {
            Some(v) if plus => format!("{v:+.4}"),
            Some(v) => format!("{v:.4}"),
            None => "—".into(),
        };
        let drift = last("loss_diff")
            .zip(first("loss_diff"))
            .map(|(l, f)| l - f);
        t.rows.push(vec![
            m.clone(),
            me.clone(),
            ts.clone(),
            es.clone(),
            get(v, "fid"),
            get(v, "kid"),
            get(v, "shapes_fd"),
            get(v, "background_accuracy"),
            get(v, "shape_color_accuracy"),
            get(v, "residual_noise"),
            show(drift, true),
            show(last("color_mean_error"), false),
            show(last("disc_gap"), false),
        ]);
    }
    out.push(t);

    // 1b. Quality and preference scores, when the run computed any.
    const SCORES: [(&str, &str); 4] = [
        ("aesthetic", "aesthetic"),
        ("clipscore", "CLIP score"),
        ("pickscore", "PickScore"),
        ("hpsv2", "HPSv2"),
    ];
    let present: Vec<(&str, &str)> = SCORES
        .iter()
        .copied()
        .filter(|(k, _)| rows.iter().any(|r| r.metric == *k))
        .collect();
    if !present.is_empty() {
        let mut header: Vec<String> = ["model", "method", "train sampler", "eval sampler"]
            .map(String::from)
            .to_vec();
        header.extend(present.iter().map(|(_, h)| h.to_string()));
        let mut t = Table {
            title: "Quality and preference scores (mean over seeds, 95 % interval)".into(),
            header,
            rows: Vec::new(),
            note: "Per image (with its prompt), then the mean; intervals from a two-stage \
                   bootstrap (seeds, then images). LAION aesthetic v2 (1–10 scale for the real \
                   head), CLIP score as torchmetrics (max(mean 100·cos, 0)), PickScore \
                   (exp(logit_scale)·cos), HPSv2 (raw cosine; v2.0 and v2.1 are not comparable; \
                   the version is in the manifest). Higher is better for all four."
                .into(),
        };
        for ((m, _, me, ts, es), v) in &all {
            if es == "-" || me == "adt-ft" || !present.iter().any(|(k, _)| v.contains_key(*k)) {
                continue;
            }
            let mut row = vec![m.clone(), me.clone(), ts.clone(), es.clone()];
            row.extend(present.iter().map(|(k, _)| get(v, k)));
            t.rows.push(row);
        }
        out.push(t);
    }

    // 2. Paired ADT − FT.
    let mut t = Table {
        title: "ADT − FT, paired (mean over seeds, 95 % interval)".into(),
        header: [
            "model",
            "train sampler",
            "eval sampler",
            "ΔFID",
            "ΔFID, t over seeds",
            "ΔFID detectable",
            "FID gap closed",
            "ΔKID",
            "ΔFD indep., t over seeds",
            "reading",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        note: "Paired: the same resampled images (same captions and initial noise) and real \
               images on both sides of each replicate. Negative = ADT better. t over seeds: the \
               per-seed differences' mean with a Student-t interval (seed-to-seed spread only). \
               Detectable: the smallest true ΔFID this n and these seeds find with 80 % power \
               (2.80 bootstrap standard errors). Gap closed: (FT − ADT) / (FT − floor)."
            .into(),
    };
    let score_diffs: Vec<(&str, &str)> = SCORES
        .iter()
        .map(|(k, h)| (*k, *h))
        .filter(|(k, _)| rows.iter().any(|r| r.metric == format!("{k}_diff")))
        .collect();
    for (_, h) in &score_diffs {
        t.header.insert(t.header.len() - 1, format!("Δ{h}"));
    }
    if !score_diffs.is_empty() {
        t.note.push_str(
            " Score differences are per image (ADT's sample i minus FT's), resampled in pairs; \
             positive = ADT better for the scores (higher is better), and CLIP score's \
             difference is of the unclamped means.",
        );
    }
    for ((m, _, me, ts, es), v) in &all {
        if me != "adt-ft" {
            continue;
        }
        let reading = match v.get("fid_diff").map(|r| (r.ci_low, r.ci_high)) {
            Some((Some(_), Some(hi))) if hi < 0.0 => "ADT better (interval below 0)",
            Some((Some(lo), Some(_))) if lo > 0.0 => "ADT worse (interval above 0)",
            Some((Some(_), Some(_))) => "no difference shown (interval contains 0)",
            _ => "no interval",
        };
        let mut row = vec![
            m.clone(),
            ts.clone(),
            es.clone(),
            get(v, "fid_diff"),
            get(v, "fid_diff_t"),
            get(v, "fid_diff_mdd"),
            v.get("fid_gap_closed")
                .map_or_else(|| "—".into(), |r| format!("{:.1} %", 100.0 * r.value)),
            get(v, "kid_diff"),
            get(v, "shapes_fd_diff"),
        ];
        row.extend(
            score_diffs
                .iter()
                .map(|(k, _)| get(v, &format!("{k}_diff"))),
        );
        row.push(reading.into());
        t.rows.push(row);
    }
    if !t.rows.is_empty() {
        out.push(t);
    }

    // 2b. The base model's few-step gap: the room a tune can close.
    let mut t = Table {
        title: "Few-step gap of the base model (the room a tune can close)".into(),
        header: [
            "model",
            "eval sampler",
            "reference sampler",
            "ΔFID",
            "ΔKID",
            "ΔFD indep.",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        note: "The base model at each eval sampler minus the base model at the many-step \
               reference sampler (`--reference-sampler`): the same captions, real images and \
               initial noise, on the seeds both were sampled with (the reference runs on the \
               first). Positive = the few-step samples are further from the real images."
            .into(),
    };
    for ((m, _, me, ts, es), v) in &all {
        if me == "few-step-gap" {
            t.rows.push(vec![
                m.clone(),
                es.clone(),
                ts.clone(),
                get(v, "fid"),
                get(v, "kid"),
                get(v, "shapes_fd"),
            ]);
        }
    }
    if !t.rows.is_empty() {
        out.push(t);
    }

    // 3. Transfer matrix: (model, method, train) × eval sampler, FID over seeds.
    let evals: BTreeSet<String> = all
        .keys()
        .filter(|k| k.4 != "-" && !NOT_MODEL_STATES.contains(&k.2.as_str()))
        .map(|k| k.4.clone())
        .collect();
    let mut mat: BTreeMap<(String, usize, String, String), BTreeMap<String, String>> =
        BTreeMap::new();
    for ((m, rk, me, ts, es), v) in &all {
        if es == "-" || NOT_MODEL_STATES.contains(&me.as_str()) {
            continue;
        }
        if let Some(r) = v.get("fid") {
            mat.entry((m.clone(), *rk, me.clone(), ts.clone()))
                .or_default()
                .insert(es.clone(), fmt_value("fid", r.value));
        }
    }
    let mut header = vec![
        "model".to_string(),
        "method".into(),
        "tuned with ↓ / evaluated with →".into(),
    ];
    header.extend(evals.iter().cloned());
    let mut t = Table {
        title: "Transfer matrix (FID, mean over seeds)".into(),
        header,
        rows: Vec::new(),
        note: "Each row is one tuned model state, each column an eval sampler: tuned with \
               sampler A, evaluated with sampler B."
            .into(),
    };
    for ((m, _, me, ts), v) in &mat {
        let mut row = vec![m.clone(), me.clone(), ts.clone()];
        row.extend(
            evals
                .iter()
                .map(|e| v.get(e).cloned().unwrap_or_else(|| "—".into())),
        );
        t.rows.push(row);
    }
    out.push(t);

    // 4. Per seed.
    let seeds: BTreeSet<u64> = rows.iter().filter_map(|r| r.seed).collect();
    let mut t = Table {
        title: "Per seed (95 % interval over images)".into(),
        header: [
            "model",
            "method",
            "train sampler",
            "eval sampler",
            "seed",
            "FID",
            "KID",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        note: String::new(),
    };
    for &s in &seeds {
        for ((m, _, me, ts, es), v) in cells(rows, meta, Some(s)) {
            if es == "-" || !v.contains_key("fid") && !v.contains_key("fid_diff") {
                continue;
            }
            let (f, k) = if me == "adt-ft" {
                (get(&v, "fid_diff"), get(&v, "kid_diff"))
            } else {
                (get(&v, "fid"), get(&v, "kid"))
            };
            t.rows.push(vec![m, me, ts, es, s.to_string(), f, k]);
        }
    }
    out.push(t);

    // 5. Tuning controls.
    let mut t = Table {
        title: "Tuning controls (mean over seeds; first → last tenth of the log)".into(),
        header: [
            "model",
            "method",
            "train sampler",
            "L_diff",
            "colour-mean error",
            "discriminator gap",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        note: "L_diff drift, colour-mean drift and the discriminator's real − generated gap over \
               the tune: the controls beside every FID."
            .into(),
    };
    for ((m, _, me, ts, es), v) in &all {
        if es != "-" {
            continue;
        }
        let pair = |k: &str| match (
            v.get(&format!("tune_{k}_first")),
            v.get(&format!("tune_{k}_last")),
        ) {
            (Some(f), Some(l)) => format!("{:.4} → {:.4}", f.value, l.value),
            _ => "—".into(),
        };
        t.rows.push(vec![
            m.clone(),
            me.clone(),
            ts.clone(),
            pair("loss_diff"),
            pair("color_mean_error"),
            pair("disc_gap"),
        ]);
    }
    out.push(t);
    out
}

/// The markdown report.
pub fn markdown(title: &str, meta: &Meta, tables: &[Table]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n\n{}\n", meta.intro);
    for t in tables {
        let _ = writeln!(md, "## {}\n", t.title);
        let _ = writeln!(md, "| {} |", t.header.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(t.header.len()));
        for r in &t.rows {
            let _ = writeln!(md, "| {} |", r.join(" | "));
        }
        if !t.note.is_empty() {
            let _ = writeln!(md, "\n{}", t.note);
        }
        md.push('\n');
    }
    md
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(t);
        t += step;
    }
    out
}

fn tick_label(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.to_string() }
    }
}

/// Axes frame: maps data to pixels inside a `w × h` SVG with margins.
struct Frame {
    w: f64,
    h: f64,
    l: f64,
    r: f64,
    t: f64,
    b: f64,
    x: (f64, f64),
    y: (f64, f64),
    log_y: bool,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let (a, b) = self.x;
        self.l + (x - a) / (b - a).max(1e-300) * (self.w - self.l - self.r)
    }
    fn py(&self, y: f64) -> f64 {
        let (a, b, y) = if self.log_y {
            (self.y.0.log10(), self.y.1.log10(), y.log10())
        } else {
            (self.y.0, self.y.1, y)
        };
        self.h - self.b - (y - a) / (b - a).max(1e-300) * (self.h - self.t - self.b)
    }
    fn axes(&self, s: &mut String, title: &str, xl: &str, yl: &str, xticks: bool) {
        let _ = write!(
            s,
            r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text x="{cx}" y="16" text-anchor="middle" font-weight="bold">{title}</text><text x="{cx}" y="{xb}" text-anchor="middle">{xl}</text><text x="14" y="{cy}" text-anchor="middle" transform="rotate(-90 14 {cy})">{yl}</text>"##,
            l = self.l,
            t = self.t,
            pw = self.w - self.l - self.r,
            ph = self.h - self.t - self.b,
            cx = (self.l + self.w - self.r) / 2.0,
            cy = (self.t + self.h - self.b) / 2.0,
            xb = self.h - 6.0,
            title = esc(title),
            xl = esc(xl),
            yl = esc(yl),
        );
        let yt = if self.log_y {
            let (a, b) = (
                self.y.0.log10().floor() as i32,
                self.y.1.log10().ceil() as i32,
            );
            (a..=b)
                .map(|e| 10f64.powi(e))
                .filter(|v| *v >= self.y.0 * 0.999 && *v <= self.y.1 * 1.001)
                .collect()
        } else {
            nice_ticks(self.y.0, self.y.1, 5)
        };
        for v in yt {
            let y = self.py(v);
            let _ = write!(
                s,
                r##"<line x1="{a}" x2="{b}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{lab}</text>"##,
                a = self.l,
                b = self.w - self.r,
                tx = self.l - 4.0,
                ty = y + 4.0,
                lab = tick_label(v)
            );
        }
        if xticks {
            for v in nice_ticks(self.x.0, self.x.1, 6) {
                let x = self.px(v);
                let _ = write!(
                    s,
                    r##"<text x="{x}" y="{y}" text-anchor="middle">{lab}</text>"##,
                    y = self.h - self.b + 16.0,
                    lab = tick_label(v)
                );
            }
        }
    }
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    )
}

/// A line plot as SVG; non-finite points (and non-positive ones on a log axis) are skipped.
pub fn svg_lines(p: &Plot) -> String {
    let ok = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!p.log_y || y > 0.0);
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(ok))
        .collect();
    let (w, h) = (560.0, 300.0);
    let legend_w = 150.0;
    if pts.is_empty() {
        return format!(
            "{}<text x=\"10\" y=\"20\">{}: no data</text></svg>",
            svg_open(w, 40.0),
            esc(&p.title)
        );
    }
    let fold = |f: fn(f64, f64) -> f64, init: f64, g: fn(&(f64, f64)) -> f64| {
        pts.iter().map(g).fold(init, f)
    };
    let (mut x0, mut x1) = (
        fold(f64::min, f64::INFINITY, |p| p.0),
        fold(f64::max, f64::NEG_INFINITY, |p| p.0),
    );
    let (mut y0, mut y1) = (
        fold(f64::min, f64::INFINITY, |p| p.1),
        fold(f64::max, f64::NEG_INFINITY, |p| p.1),
    );
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if p.log_y {
        if y1 <= y0 * 1.0001 {
            y0 /= 1.5;
            y1 *= 1.5;
        }
    } else {
        let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-3).max(1e-12);
        y0 -= pad;
        y1 += pad;
    }
    let f = Frame {
        w,
        h,
        l: 58.0,
        r: legend_w + 8.0,
        t: 24.0,
        b: 36.0,
        x: (x0, x1),
        y: (y0, y1),
        log_y: p.log_y,
    };
    let mut s = svg_open(w, h);
    f.axes(&mut s, &p.title, &p.x_label, &p.y_label, true);
    for (i, se) in p.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let d: Vec<String> = se
            .points
            .iter()
            .filter(|q| ok(q))
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        if d.len() == 1 {
            let (x, y) = d[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
        } else {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.6"{dash} points="{}"/>"#,
                d.join(" ")
            );
        }
        let ly = 30.0 + 16.0 * i as f64;
        let lx = w - legend_w;
        let _ = write!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(&se.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// Dot-and-whisker plot of one metric (value and 95 % interval) per labelled entry, grouped.
/// `groups`: (group title, [(label, value, low, high)]).
pub fn svg_intervals(title: &str, y_label: &str, groups: &[(String, Vec<Interval>)]) -> String {
    let n: usize = groups.iter().map(|g| g.1.len()).sum();
    let (w, h) = (
        (120.0 + 46.0 * n as f64 + 20.0 * groups.len() as f64).max(320.0),
        300.0,
    );
    let vals: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.1.iter().flat_map(|e| [Some(e.1), e.2, e.3]))
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() {
        return format!(
            "{}<text x=\"10\" y=\"20\">{}: no data</text></svg>",
            svg_open(w, 40.0),
            esc(title)
        );
    }
    let (lo, hi) = vals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-12);
    let f = Frame {
        w,
        h,
        l: 58.0,
        r: 10.0,
        t: 24.0,
        b: 70.0,
        x: (0.0, (n + groups.len()) as f64),
        y: (lo - pad, hi + pad),
        log_y: false,
    };
    let mut s = svg_open(w, h);
    f.axes(&mut s, title, "", y_label, false);
    let mut slot = 0.5;
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for (gt, entries) in groups {
        let start = slot;
        for (label, v, l, u) in entries {
            let k = labels.len();
            let ci = *labels.entry(label.clone()).or_insert(k);
            let c = PALETTE[ci % PALETTE.len()];
            let x = f.px(slot + 0.5);
            if let (Some(l), Some(u)) = (l, u) {
                let _ = write!(
                    s,
                    r#"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="{c}" stroke-width="2"/><line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="{c}"/><line x1="{}" x2="{}" y1="{z}" y2="{z}" stroke="{c}"/>"#,
                    f.py(*l),
                    f.py(*u),
                    x - 5.0,
                    x + 5.0,
                    x - 5.0,
                    x + 5.0,
                    y = f.py(*l),
                    z = f.py(*u)
                );
            }
            let _ = write!(
                s,
                r#"<circle cx="{x}" cy="{}" r="4" fill="{c}"><title>{}: {v}</title></circle><text x="{x}" y="{}" text-anchor="end" transform="rotate(-35 {x} {})">{}</text>"#,
                f.py(*v),
                esc(label),
                h - 70.0 + 14.0,
                h - 70.0 + 14.0,
                esc(label)
            );
            slot += 1.0;
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-style="italic">{}</text>"#,
            (f.px(start) + f.px(slot)) / 2.0,
            h - 6.0,
            esc(gt)
        );
        slot += 1.0;
    }
    s.push_str("</svg>");
    s
}

/// A heatmap of a numeric table (rows × columns, lower = greener), values written in the cells.
pub fn svg_heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
) -> String {
    let (cw, ch, lw, top) = (96.0, 28.0, 170.0, 44.0);
    let (w, h) = (
        lw + cw * cols.len() as f64 + 10.0,
        top + ch * rows.len() as f64 + 10.0,
    );
    let fin: Vec<f64> = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = fin
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let mut s = svg_open(w, h);
    let _ = write!(
        s,
        r#"<text x="{}" y="16" text-anchor="middle" font-weight="bold">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for (j, c) in cols.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            lw + cw * (j as f64 + 0.5),
            top - 8.0,
            esc(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            lw - 6.0,
            y + ch / 2.0 + 4.0,
            esc(r)
        );
        for j in 0..cols.len() {
            let v = values.get(i).and_then(|r| r.get(j)).copied().flatten();
            let (fill, text) = match v {
                Some(v) if v.is_finite() => {
                    let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                    // green (best, low) → yellow → red (worst, high)
                    let (r, g) = if t < 0.5 {
                        (510.0 * t, 200.0)
                    } else {
                        (255.0, 200.0 - 400.0 * (t - 0.5))
                    };
                    (
                        format!("rgb({:.0},{:.0},80)", r.min(255.0), g.max(0.0)),
                        format!("{v:.2}"),
                    )
                }
                _ => ("#eee".to_string(), "—".to_string()),
            };
            let x = lw + cw * j as f64;
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{fill}" stroke="#fff"/><text x="{}" y="{}" text-anchor="middle">{text}</text>"##,
                x + cw / 2.0,
                y + ch / 2.0 + 4.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn html_table(t: &Table) -> String {
    let mut s = format!("<h2>{}</h2>\n<table>\n<tr>", esc(&t.title));
    for h in &t.header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for r in &t.rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    if !t.note.is_empty() {
        let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(&t.note));
    }
    s
}

/// One self-contained HTML page: intro, tables, plots (inline SVG), figures (base64 PNG).
pub fn html(
    title: &str,
    meta: &Meta,
    tables: &[Table],
    svgs: &[(String, String)],
    figures: &[Figure],
) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}\
         th{{background:#f3f3f3}}.note{{color:#555;font-size:13px}}figure{{display:inline-block;margin:0.5em}}\
         figure img{{image-rendering:pixelated;width:256px}}figcaption{{font-size:12px;max-width:256px}}\
         .plot{{display:inline-block;margin:0.5em;vertical-align:top}}\
         </style></head><body>\n<h1>{t}</h1>\n<p>{intro}</p>\n",
        t = esc(title),
        intro = esc(&meta.intro)
    );
    for t in tables {
        s.push_str(&html_table(t));
    }
    if !svgs.is_empty() {
        s.push_str("<h2>Plots</h2>\n");
        for (caption, svg) in svgs {
            let _ = writeln!(
                s,
                "<div class=\"plot\">{svg}<p class=\"note\">{}</p></div>",
                esc(caption)
            );
        }
    }
    if !figures.is_empty() {
        s.push_str("<h2>Sample grids</h2>\n");
        for f in figures {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&f.png);
            let _ = writeln!(
                s,
                "<figure><img alt=\"{c}\" src=\"data:image/png;base64,{b64}\"><figcaption>{c}</figcaption></figure>",
                c = esc(&f.caption)
            );
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        method: &str,
        es: &str,
        seed: Option<u64>,
        metric: &str,
        v: f64,
        ci: Option<(f64, f64)>,
    ) -> MetricRow {
        MetricRow {
            model: "tiny".into(),
            method: method.into(),
            train_sampler: if method == "base" {
                "-".into()
            } else {
                "ddim:10".into()
            },
            eval_sampler: es.into(),
            steps: 10,
            guidance: 2.0,
            seed,
            metric: metric.into(),
            value: v,
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            n: 64,
        }
    }

    #[test]
    fn paired_rows_are_read_by_their_interval() {
        let meta = Meta {
            intro: "x".into(),
            methods: vec!["base".into(), "ft".into(), "adt".into()],
        };
        let rows = vec![
            row(
                "adt-ft",
                "ddim:10",
                None,
                "fid_diff",
                -3.0,
                Some((-5.0, -1.0)),
            ),
            row(
                "adt-ft",
                "dpm++2m:10",
                None,
                "fid_diff",
                1.0,
                Some((-1.0, 3.0)),
            ),
            row(
                "adt-ft",
                "euler:20",
                None,
                "fid_diff",
                4.0,
                Some((2.0, 6.0)),
            ),
            row("ft", "ddim:10", None, "fid", 250.0, Some((240.0, 260.0))),
            row("adt", "ddim:10", None, "fid", 247.0, None),
        ];
        let t = tables(&rows, &meta);
        let paired = t.iter().find(|t| t.title.starts_with("ADT − FT")).unwrap();
        let readings: Vec<&str> = paired
            .rows
            .iter()
            .map(|r| r[r.len() - 1].as_str())
            .collect();
        assert_eq!(
            readings,
            [
                "ADT better (interval below 0)",
                "no difference shown (interval contains 0)",
                "ADT worse (interval above 0)"
            ]
        );
        let main = &t[0];
        // Methods in the user's order; intervals beside values.
        assert_eq!(main.rows[0][1], "ft");
        assert_eq!(main.rows[0][4], "250.00 [240.00, 260.00]");
        assert_eq!(main.rows[1][4], "247.00");
    }

    #[test]
    fn svg_plots_are_well_formed_and_skip_bad_points() {
        let p = Plot {
            title: "a < b".into(),
            x_label: "iteration".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    label: "adt".into(),
                    points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5)],
                    dashed: false,
                },
                Series {
                    label: "ref".into(),
                    points: vec![(0.0, 2.0), (2.0, 3.0)],
                    dashed: true,
                },
            ],
            log_y: true,
            caption: String::new(),
        };
        let s = svg_lines(&p);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("a &lt; b"), "escaped title");
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(!s.contains("NaN"));
        let h = svg_heatmap(
            "t",
            &["ft".into()],
            &["ddim:10".into(), "x".into()],
            &[vec![Some(1.0), None]],
        );
        assert!(h.contains("1.00") && h.contains("—"));
        let i = svg_intervals(
            "FID",
            "FID",
            &[(
                "ddim:10".into(),
                vec![("ft".into(), 2.0, Some(1.0), Some(3.0))],
            )],
        );
        assert!(i.contains("<circle") && i.ends_with("</svg>"));
    }
}
