//! The FID evaluation stage: the Inception network loaded once ([`Net`]), and the statistics
//! (μ, Σ and features) of an image folder, a data source or an `.npz` statistics file,
//! cached by content, mode and weights ([`set_stats`]). `fid` and `run` both use it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use adt_metrics::arch::DIMS;
use adt_metrics::features::Extractor;
use adt_metrics::stats::{FeatureStats, Gaussian};
use adt_metrics::weights::{self, Fetch};
use adt_metrics::{Inception, InceptionWeights, Mode};

use crate::cli::InceptionOpts;
use crate::exit::DataError;
use crate::progress::Bar;

/// The statistics (and, for image sets, features) of one input.
pub struct SetStats {
    /// What the user wrote.
    pub label: String,
    /// μ and Σ.
    pub gaussian: Gaussian,
    /// Features, when known (image sets; `.npz` files with `feats`).
    pub features: Option<Vec<f32>>,
    /// Number of images (None for foreign statistics without a count).
    pub count: Option<u64>,
    /// Mode, when known.
    pub mode: Option<Mode>,
    /// Weights hash, when known.
    pub weights: Option<String>,
    /// Bad images skipped (with `--skip-bad`).
    pub skipped: usize,
    /// Whether the features came from the cache.
    pub cached: bool,
}

/// The Inception network, loaded on first use.
pub struct Net {
    explicit: Option<PathBuf>,
    fetch: Fetch,
    quiet: bool,
    net: Option<(Inception, String, String)>,
}

impl Net {
    /// Resolve lazily from an explicit path, the environment or the cache (downloading unless
    /// `--no-download`).
    pub fn new(o: &InceptionOpts, quiet: bool) -> Net {
        Net {
            explicit: o.inception_weights.clone(),
            fetch: if o.no_download {
                Fetch::Never
            } else {
                Fetch::Auto
            },
            quiet,
            net: None,
        }
    }

    /// The network, its weights hash and where the weights came from.
    pub fn get(&mut self) -> anyhow::Result<(&Inception, &str, &str)> {
        if self.net.is_none() {
            let cached = weights::cache_path();
            if self.explicit.is_none()
                && std::env::var_os(weights::ENV_WEIGHTS).is_none()
                && !cached.exists()
                && self.fetch == Fetch::Auto
                && !self.quiet
            {
                eprintln!(
                    "FID Inception weights not found; fetching them once into {} …",
                    cached.display()
                );
            }
            let (path, how) = weights::resolve(self.explicit.as_deref(), self.fetch)?;
            let w = InceptionWeights::load(&path)?;
            if !weights::is_standard(&w) {
                if how == "cache" {
                    // The cache only ever holds a verified conversion: anything else there
                    // was put there by something else.
                    bail!(
                        "the cached FID Inception weights {} are not the standard network \
                         (tensor SHA-256 {}, expected {}); delete the file and run `adt-bench \
                         fid --fetch-weights`",
                        path.display(),
                        w.sha256(),
                        weights::INCEPTION_TENSORS_SHA256
                    );
                }
                if !self.quiet {
                    eprintln!(
                        "warning: {} ({how}) is not the standard FID Inception network (tensor \
                         SHA-256 {}); its FIDs are not comparable with published ones",
                        path.display(),
                        w.sha256()
                    );
                }
            }
            let note = format!("{} ({how})", path.display());
            tracing::info!("Inception weights {note}, sha256 {}", w.sha256());
            self.net = Some((Inception::new(&w), w.sha256().to_string(), note));
        }
        let (n, h, s) = self.net.as_ref().context("network not loaded")?;
        Ok((n, h, s))
    }
}

/// All files under `root`, recursively, sorted. Symlinked folders are followed once: a real
/// folder already read is not read again, so links that loop end.
pub(crate) fn files_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(
        dir: &Path,
        seen: &mut std::collections::HashSet<PathBuf>,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        if !seen.insert(std::fs::canonicalize(dir)?) {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, seen, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, &mut std::collections::HashSet::new(), &mut out)
        .with_context(|| format!("cannot read {}", root.display()))?;
    Ok(out)
}

/// Options for computing the statistics of an image set.
#[derive(Clone)]
pub struct SetOptions {
    /// The mode.
    pub mode: Mode,
    /// Images per forward pass.
    pub batch: usize,
    /// Skip undecodable images (counted) instead of stopping.
    pub skip_bad: bool,
    /// Images drawn from an unlimited (built-in) source.
    pub num: usize,
    /// Read and write the statistics cache.
    pub use_cache: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Device of the Inception network.
    pub device: candle_core::Device,
}

/// Statistics of one input: a `.npz` statistics file, an image folder, or a data source.
pub fn set_stats(input: &str, net: &mut Net, o: &SetOptions) -> anyhow::Result<SetStats> {
    let path = Path::new(input);
    if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        let f = adt_metrics::npz::read_stats(path)?;
        let d = f.gaussian.mu.len();
        if d != adt_metrics::arch::DIMS {
            return Err(crate::exit::DataError(format!(
                "{input} holds {d}-dimensional statistics; the FID Inception network's pool \
                 features are {}-dimensional, so these come from another extractor",
                adt_metrics::arch::DIMS
            ))
            .into());
        }
        let mode = f
            .meta
            .as_ref()
            .and_then(|m| m["mode"].as_str())
            .and_then(Mode::parse);
        if let Some(m) = mode
            && m != o.mode
        {
            bail!(
                "{input} holds statistics of mode `{m}`, but this comparison uses `{}`; pass \
                 --mode {m} or recompute the statistics",
                o.mode
            );
        }
        let weights = f
            .meta
            .as_ref()
            .and_then(|m| m["weights_sha256"].as_str())
            .map(str::to_string);
        let count = f.gaussian.count;
        return Ok(SetStats {
            label: input.to_string(),
            gaussian: f.gaussian,
            features: f.features,
            count,
            mode,
            weights,
            skipped: 0,
            cached: false,
        });
    }
    let spec = adt_datasets::DataSpec::parse(input)?;
    let unlimited = matches!(spec, adt_datasets::DataSpec::Shapes { .. });
    // The set's identity (file contents for file sources, the spec and count for built-ins)
    // and its size for the progress bar (0 when unknown), from one listing.
    let (content, total) = match &spec {
        adt_datasets::DataSpec::Shapes { .. } => (format!("{spec}&n={}", o.num), o.num),
        adt_datasets::DataSpec::Folder { path }
        | adt_datasets::DataSpec::Parquet { path }
        | adt_datasets::DataSpec::WebDataset { path } => {
            let files = if path.is_dir() {
                files_under(path)?
            } else {
                vec![path.clone()]
            };
            let images = match spec {
                adt_datasets::DataSpec::Folder { .. } => files
                    .iter()
                    .filter(|p| adt_datasets::is_image_path(p))
                    .count(),
                _ => 0,
            };
            let hash = adt_metrics::features::hash_files(path, &files)?;
            (format!("{spec}:{hash}"), images)
        }
    };
    let (net_ref, wsha, _) = net.get()?;
    let wsha = wsha.to_string();
    // Every option that changes which images count is part of the key: a set cached with
    // --skip-bad must not answer for a run that would stop at the bad image.
    let content = format!("{content}\0skip_bad={}", o.skip_bad);
    let key = adt_metrics::features::set_key(&content, o.mode, &wsha);
    let cache = weights::cache_dir()
        .join("stats")
        .join(format!("{key}.npz"));
    if o.use_cache
        && let Ok(f) = adt_metrics::npz::read_stats(&cache)
        && let Some(features) = f.features
    {
        tracing::info!("{input}: statistics from the cache ({})", cache.display());
        let count = f.gaussian.count;
        return Ok(SetStats {
            label: input.to_string(),
            gaussian: f.gaussian,
            features: Some(features),
            count,
            mode: Some(o.mode),
            weights: Some(wsha),
            skipped: 0,
            cached: true,
        });
    }
    let stream = adt_datasets::open(&spec)?;
    let stream: adt_datasets::RecordStream = if unlimited {
        Box::new(stream.take(o.num))
    } else {
        stream
    };
    let label = short_label(input);
    let bar = Bar::new(total as u64, &label, o.quiet);
    // Bad images: skipped and counted with --skip-bad, otherwise the stream ends at the first
    // one and the command stops naming it.
    let skipped = std::cell::Cell::new(0usize);
    let first_error: std::cell::RefCell<Option<adt_datasets::RecordError>> = Default::default();
    let mut stream = stream;
    let mut images = std::iter::from_fn(|| {
        loop {
            match stream.next()? {
                Ok(rec) => return Some(rec.image),
                Err(e) if o.skip_bad => {
                    skipped.set(skipped.get() + 1);
                    bar.println(&format!("warning: {e}"));
                }
                Err(e) => {
                    *first_error.borrow_mut() = Some(e);
                    return None;
                }
            }
        }
    });
    let ex = Extractor::new(net_ref, o.mode, o.batch).on(o.device.clone());
    let mut last = 0;
    let features = ex.features_stream(&mut images, &mut |done| {
        bar.inc_by((done - last) as u64);
        last = done;
    })?;

    let skipped = skipped.get();
    let first_error = first_error.into_inner();
    bar.finish();
    if let Some(e) = first_error {
        return Err(DataError(format!(
            "{e} (pass --skip-bad to skip undecodable images and count them)"
        ))
        .into());
    }
    let n = features.len() / DIMS;
    if n < 2 {
        return Err(DataError(format!(
            "{input}: {n} image(s){}; FID needs at least 2 (and 2048 or more for a full-rank \
             covariance)",
            if skipped > 0 {
                format!(" after skipping {skipped} bad one(s)")
            } else {
                String::new()
            }
        ))
        .into());
    }
    let mut st = FeatureStats::new(DIMS);
    st.add(&features);
    let gaussian = st.gaussian();
    if o.use_cache {
        let meta = stats_meta(o.mode, &wsha, n as u64, input);
        if let Err(e) = adt_metrics::npz::write_stats(&cache, &gaussian, Some(&features), &meta) {
            tracing::warn!("could not write the statistics cache: {e}");
        }
    }
    Ok(SetStats {
        label: input.to_string(),
        gaussian,
        features: Some(features),
        count: Some(n as u64),
        mode: Some(o.mode),
        weights: Some(wsha),
        skipped,
        cached: false,
    })
}

fn short_label(input: &str) -> String {
    let s = input.trim_end_matches('/');
    let s = s.rsplit('/').next().unwrap_or(s);
    s.chars().take(10).collect()
}

/// The metadata written into statistics files.
pub fn stats_meta(mode: Mode, weights_sha256: &str, n: u64, source: &str) -> serde_json::Value {
    json!({
        "format": "adt-bench fid statistics",
        "mode": mode.name(),
        "mode_description": mode.describe(),
        "weights_sha256": weights_sha256,
        "n": n,
        "source": source,
        "adt_bench_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Warnings about one set.
pub(crate) fn set_warnings(s: &SetStats, mode: Mode) -> Vec<String> {
    let mut w = Vec::new();
    match s.count {
        Some(n) if n < DIMS as u64 => w.push(format!(
            "{}: {n} images < {DIMS}: the covariance is rank-deficient, so FID is biased upward \
             and not comparable with full-size evaluations (use 10,000 or more where you can)",
            s.label
        )),
        None => w.push(format!(
            "{}: sample count unknown (foreign statistics file)",
            s.label
        )),
        _ => {}
    }
    if s.mode.is_none() {
        w.push(format!(
            "{}: statistics file does not record its mode; it is assumed to be `{mode}`",
            s.label
        ));
    }
    if s.skipped > 0 {
        w.push(format!("{}: skipped {} bad image(s)", s.label, s.skipped));
    }
    w
}

#[cfg(all(test, unix))]
mod walk_tests {
    /// Links back to the folder itself are followed once: the files once each, no hang.
    #[test]
    fn files_under_ends_on_symlink_loops() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.png"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("loop1")).unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("loop2")).unwrap();
        let files = super::files_under(d.path()).unwrap();
        assert_eq!(files, [d.path().join("a.png")]);
    }
}
