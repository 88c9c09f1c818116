//! Exit codes: a public contract, documented in `adt-bench --help`.

/// Success.
pub const OK: u8 = 0;
/// Any unexpected failure.
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// A plugin could not be loaded or is incompatible.
pub const PLUGIN_INCOMPATIBLE: u8 = 3;
/// A data source could not be read.
pub const DATASET_ERROR: u8 = 4;
/// Training diverged (non-finite losses).
pub const DIVERGED: u8 = 5;
/// `report compare` found a regression.
pub const REGRESSION: u8 = 6;
/// `plugins check --conformance` found a broken contract.
pub const NONCONFORMING: u8 = 7;

/// Conformance checks failed (the message names them).
#[derive(Debug)]
pub struct Nonconforming(pub String);

impl std::fmt::Display for Nonconforming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Nonconforming {}

/// `report compare` found regressions (the message lists them).
#[derive(Debug)]
pub struct Regression(pub String);

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Regression {}

/// A data error found by the harness itself (a bad image, too few images).
#[derive(Debug)]
pub struct DataError(pub String);

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

/// Map an error chain to an exit code.
pub fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(h) = cause.downcast_ref::<adt_plugin_host::Error>()
            && matches!(
                h,
                adt_plugin_host::Error::NotAPlugin { .. }
                    | adt_plugin_host::Error::IncompatibleAbi { .. }
            )
        {
            return PLUGIN_INCOMPATIBLE;
        }
        if cause.downcast_ref::<adt_datasets::Error>().is_some()
            || cause.downcast_ref::<DataError>().is_some()
            || matches!(
                cause.downcast_ref::<adt_metrics::Error>(),
                Some(
                    adt_metrics::Error::Image { .. }
                        | adt_metrics::Error::TooFew { .. }
                        | adt_metrics::Error::Stats { .. }
                        | adt_metrics::Error::Mismatch(_)
                )
            )
        {
            return DATASET_ERROR;
        }
        if let Some(adt_tuner::Error::Diverged { .. }) = cause.downcast_ref::<adt_tuner::Error>() {
            return DIVERGED;
        }
        if cause.downcast_ref::<Regression>().is_some() {
            return REGRESSION;
        }
        if cause.downcast_ref::<Nonconforming>().is_some() {
            return NONCONFORMING;
        }
    }
    FAILURE
}
