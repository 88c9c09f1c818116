//! Data for adt-bench: the built-in procedural set and streaming loaders for the formats
//! diffusion data ships in.
//!
//! **API Boundary.** Every source yields [`Record`]s (an sRGB image and its caption) through
//! [`open`], as a stream of `Result<Record, RecordError>`: a bad record (undecodable image,
//! missing caption) is an `Err` item the caller reports and skips, never a fatal error. Only
//! failing to open the source itself is fatal ([`Error`]).
//!
//! This crate does file IO but never prints: it reports through return values and `tracing`.

#![forbid(unsafe_code)]

pub mod folder;
pub mod parquet_source;
pub mod shapes;
pub mod shapes_score;
pub mod transform;
pub mod wds;

use std::fmt;
use std::path::{Path, PathBuf};

pub use image::RgbImage;

/// Errors opening a data source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source specification could not be understood.
    #[error("unknown data source `{spec}`: {reason}")]
    BadSpec {
        /// What the user wrote.
        spec: String,
        /// Why it was refused.
        reason: String,
    },
    /// An IO error on the source itself (not on one record).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A parquet file could not be opened or has no usable columns.
    #[error("parquet file {path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The source holds no records at all.
    #[error("data source {path} holds no images")]
    Empty {
        /// The source path.
        path: PathBuf,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One bad record: reported and skipped, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Where the record lives (file path, `shard.tar:key`, `file.parquet#row`).
    pub location: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped bad record {}: {}", self.location, self.reason)
    }
}

impl std::error::Error for RecordError {}

/// One training/evaluation example.
#[derive(Debug, Clone)]
pub struct Record {
    /// A stable key (file stem, tar key, row index).
    pub key: String,
    /// The image, sRGB, at the source's resolution unless a transform was applied.
    pub image: RgbImage,
    /// The caption (empty when the source has none).
    pub caption: String,
}

/// A stream of records.
pub type RecordStream = Box<dyn Iterator<Item = std::result::Result<Record, RecordError>> + Send>;

/// A parsed data source specification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// `builtin:shapes[?seed=N&size=N&offset=N&draw=N]` — the procedural set, unlimited
    /// (`draw` ≠ 0: the same captions drawn anew).
    Shapes {
        /// The generator settings.
        config: shapes::ShapesConfig,
        /// First example index (to split train and evaluation ranges).
        offset: u64,
    },
    /// `folder:PATH` or a directory — images with sidecar `.txt` or `metadata.jsonl` / `metadata.csv`.
    Folder {
        /// The root directory.
        path: PathBuf,
    },
    /// `parquet:PATH` or a `.parquet` file or a directory of them.
    Parquet {
        /// A file or directory.
        path: PathBuf,
    },
    /// `wds:PATH` or a `.tar` file or a directory of `.tar` shards.
    WebDataset {
        /// A shard or directory of shards.
        path: PathBuf,
    },
}

impl DataSpec {
    /// Parse a user-facing specification.
    ///
    /// `builtin:shapes`, `builtin:shapes?seed=3&size=32&offset=100000`, `folder:DIR`,
    /// `parquet:PATH`, `wds:PATH`, or a bare path whose kind is detected (a directory holding
    /// `.parquet` files or `.tar` shards is read as such, any other directory as an image folder).
    pub fn parse(spec: &str) -> Result<DataSpec> {
        let bad = |reason: &str| Error::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = spec.strip_prefix("builtin:") {
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            if name != "shapes" {
                return Err(bad("the only built-in data set is `builtin:shapes`"));
            }
            let mut config = shapes::ShapesConfig::DEFAULT;
            let mut offset = 0;
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad("options are written key=value"))?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad("option values must be integers"))?;
                match k {
                    "seed" => config.seed = n,
                    "size" => {
                        if !(8..=1024).contains(&n) {
                            return Err(bad("size must be between 8 and 1024"));
                        }
                        config.size = n as u32
                    }
                    "offset" => offset = n,
                    "draw" => config.draw = n,
                    _ => return Err(bad("known options are seed, size, offset and draw")),
                }
            }
            return Ok(DataSpec::Shapes { config, offset });
        }
        for (prefix, make) in [
            (
                "folder:",
                (|p| DataSpec::Folder { path: p }) as fn(PathBuf) -> DataSpec,
            ),
            ("parquet:", |p| DataSpec::Parquet { path: p }),
            ("wds:", |p| DataSpec::WebDataset { path: p }),
        ] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                return Ok(make(PathBuf::from(rest)));
            }
        }
        let path = PathBuf::from(spec);
        if !path.exists() {
            return Err(bad(
                "no such file or directory (built-in sets are written `builtin:shapes`)",
            ));
        }
        let ext_is = |p: &Path, e: &str| p.extension().is_some_and(|x| x.eq_ignore_ascii_case(e));
        if path.is_file() {
            if ext_is(&path, "parquet") {
                return Ok(DataSpec::Parquet { path });
            }
            if ext_is(&path, "tar") {
                return Ok(DataSpec::WebDataset { path });
            }
            return Err(bad("a single file must be a .parquet file or a .tar shard"));
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        if entries.iter().any(|p| ext_is(p, "parquet")) {
            return Ok(DataSpec::Parquet { path });
        }
        if entries.iter().any(|p| ext_is(p, "tar")) {
            return Ok(DataSpec::WebDataset { path });
        }
        Ok(DataSpec::Folder { path })
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Shapes { config, offset } => {
                write!(
                    f,
                    "builtin:shapes?seed={}&size={}&offset={}",
                    config.seed, config.size, offset
                )?;
                if config.draw != 0 {
                    write!(f, "&draw={}", config.draw)?;
                }
                Ok(())
            }
            DataSpec::Folder { path } => write!(f, "folder:{}", path.display()),
            DataSpec::Parquet { path } => write!(f, "parquet:{}", path.display()),
            DataSpec::WebDataset { path } => write!(f, "wds:{}", path.display()),
        }
    }
}

/// Open a source as a stream of records. The built-in set is unlimited; file sources end.
pub fn open(spec: &DataSpec) -> Result<RecordStream> {
    match spec {
        DataSpec::Shapes { config, offset } => {
            let (config, offset) = (*config, *offset);
            Ok(Box::new((offset..).map(move |i| {
                let ex = shapes::generate(config, i);
                Ok(Record {
                    key: match config.draw {
                        0 => format!("shapes-{}-{i}", config.seed),
                        d => format!("shapes-{}-{i}-draw{d}", config.seed),
                    },
                    image: ex.image,
                    caption: ex.caption,
                })
            })))
        }
        DataSpec::Folder { path } => folder::open(path),
        DataSpec::Parquet { path } => parquet_source::open(path),
        DataSpec::WebDataset { path } => wds::open(path),
    }
}

/// Open a source and apply [`transform::resize_center_crop`] to every record.
pub fn open_resized(spec: &DataSpec, size: u32) -> Result<RecordStream> {
    let stream = open(spec)?;
    Ok(Box::new(stream.map(move |r| {
        r.map(|mut rec| {
            rec.image = transform::resize_center_crop(&rec.image, size);
            rec
        })
    })))
}

/// The largest side an image may declare.
pub const MAX_IMAGE_SIDE: u32 = 32_768;
/// The most bytes one decode may allocate (a 12 000² RGB image is 432 MB).
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;

/// Decode image bytes (format guessed from the content) within [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_ALLOC`]: the limits are checked against the header before any pixel is
/// allocated. Grey and alpha images are converted to RGB.
pub fn decode_image_bounded(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    reader
        .decode()
        .map(|img| img.to_rgb8())
        .map_err(|e| match e {
            image::ImageError::Limits(_) => format!(
                "{e} (images may have at most {MAX_IMAGE_SIDE} pixels a side and decode to at most \
             {} MiB)",
                MAX_IMAGE_ALLOC >> 20
            ),
            e => e.to_string(),
        })
}

/// Read and decode an image file with [`decode_image_bounded`]; the file's size is capped at
/// [`MAX_IMAGE_ALLOC`] before it is read.
pub fn read_image_file(path: &Path) -> std::result::Result<RgbImage, String> {
    let bytes = read_capped(path, MAX_IMAGE_ALLOC).map_err(|e| e.to_string())?;
    decode_image_bounded(&bytes)
}

/// The bytes of a file of at most `cap` bytes (an error naming the size past it).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "the file is larger than {} MiB",
            cap >> 20
        )));
    }
    Ok(bytes)
}

/// Decode image bytes, naming the record on failure.
pub(crate) fn decode_image(
    bytes: &[u8],
    location: &str,
) -> std::result::Result<RgbImage, RecordError> {
    decode_image_bounded(bytes).map_err(|e| RecordError {
        location: location.to_string(),
        reason: format!("cannot decode image: {e}"),
    })
}

/// `path` itself, or the files directly in the folder `path` with extension `ext`, sorted.
pub(crate) fn files_with_extension(path: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

/// Whether a file name has one of the image extensions the loaders read.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "webp"
            )
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::new(w, h)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    /// A small file declaring a side past the limit is refused from its header; one within
    /// it decodes.
    #[test]
    fn decoding_is_bounded_by_the_declared_size() {
        let wide = png(MAX_IMAGE_SIDE + 1, 1);
        assert!(wide.len() < 2000, "{}", wide.len());
        let e = decode_image_bounded(&wide).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        assert_eq!(
            decode_image_bounded(&png(7, 3)).unwrap().dimensions(),
            (7, 3)
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        std::fs::write(&p, png(2, 2)).unwrap();
        assert!(read_image_file(&p).is_ok());
        assert!(
            read_capped(&p, 10)
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
    }

    #[test]
    fn parse_specs() {
        assert_eq!(
            DataSpec::parse("builtin:shapes").unwrap(),
            DataSpec::Shapes {
                config: shapes::ShapesConfig::DEFAULT,
                offset: 0
            }
        );
        let s = DataSpec::parse("builtin:shapes?seed=3&size=16&offset=9").unwrap();
        assert_eq!(
            s,
            DataSpec::Shapes {
                config: shapes::ShapesConfig {
                    size: 16,
                    seed: 3,
                    draw: 0
                },
                offset: 9
            }
        );
        assert_eq!(DataSpec::parse(&s.to_string()).unwrap(), s);
        assert!(matches!(
            DataSpec::parse("builtin:cats"),
            Err(Error::BadSpec { .. })
        ));
        assert!(matches!(
            DataSpec::parse("builtin:shapes?size=x"),
            Err(Error::BadSpec { .. })
        ));
        assert!(matches!(
            DataSpec::parse("/no/such/dir"),
            Err(Error::BadSpec { .. })
        ));
        assert_eq!(
            DataSpec::parse("wds:/x").unwrap(),
            DataSpec::WebDataset { path: "/x".into() }
        );
    }

    #[test]
    fn builtin_stream_is_unlimited_and_offset() {
        let spec = DataSpec::parse("builtin:shapes?offset=5").unwrap();
        let recs: Vec<_> = open(&spec).unwrap().take(3).map(|r| r.unwrap()).collect();
        assert_eq!(recs[0].key, "shapes-0-5");
        assert_eq!(
            recs[0].image.as_raw(),
            shapes::generate(shapes::ShapesConfig::DEFAULT, 5)
                .image
                .as_raw()
        );
        assert_eq!(open(&spec).unwrap().skip(10_000).take(1).count(), 1);
    }
}
