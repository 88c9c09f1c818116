//! Reports: polars frames written as parquet and CSV — a CSV log (the tuner's `log.csv`) into
//! parquet with inferred column types, and the benchmark's long-format metrics frame
//! ([`metrics`]): its schema, reading and writing, and the comparison of two reports.

#![forbid(unsafe_code)]

#[cfg(feature = "parquet")]
use std::path::Path;
use std::path::PathBuf;

#[cfg(feature = "parquet")]
use polars::prelude::*;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// polars failed.
    #[cfg(feature = "parquet")]
    #[error("{path}: {source}")]
    Polars {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: PolarsError,
    },
    /// A frame that breaks its rules (e.g. two rows with one key).
    #[error("{0}")]
    Invalid(String),
    /// A CSV file could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: csv::Error,
    },
}

pub mod metrics;
pub mod render;
pub mod snapshot;

pub use snapshot::{CiConfig, snapshot};

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(feature = "parquet")]
/// Read a CSV file with a header into a frame (column types inferred from all rows).
pub fn read_csv(path: &Path) -> Result<DataFrame> {
    let pe = |source| Error::Polars {
        path: path.to_path_buf(),
        source,
    };
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .map_err(pe)?
        .finish()
        .map_err(pe)
}

#[cfg(feature = "parquet")]
/// Write a frame as parquet (zstd), through a temporary file and a rename.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .map_err(|source| Error::Polars {
            path: path.to_path_buf(),
            source,
        })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(feature = "parquet")]
/// Read a parquet file.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|source| Error::Polars {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(feature = "parquet")]
/// `log.csv` → `log.parquet` beside it.
pub fn csv_to_parquet(csv: &Path) -> Result<PathBuf> {
    let mut df = read_csv(csv)?;
    let out = csv.with_extension("parquet");
    write_parquet(&mut df, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_log_round_trips_through_parquet_with_types() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("log.csv");
        std::fs::write(
            &csv,
            "iter,g_update,loss_d,eval_grad_norms\n1,false,1.5,\n2,true,NaN,0:1.0e-3;1:2.0e-3\n",
        )
        .unwrap();
        let pq = csv_to_parquet(&csv).unwrap();
        let df = read_parquet(&pq).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.column("iter").unwrap().dtype(), &DataType::Int64);
        assert_eq!(df.column("g_update").unwrap().dtype(), &DataType::Boolean);
        assert_eq!(df.column("loss_d").unwrap().dtype(), &DataType::Float64);
        let v = df.column("loss_d").unwrap().f64().unwrap().get(1).unwrap();
        assert!(v.is_nan());
        assert_eq!(
            df.column("eval_grad_norms").unwrap().str().unwrap().get(1),
            Some("0:1.0e-3;1:2.0e-3")
        );
    }
}
