//! Host side of the plugin boundary: finds plugins, checks their ABI before touching anything
//! else, and wraps their C function tables in safe Rust types ([`Model`], [`Samplers`]).
//!
//! **API Boundary.** This crate (with the SDK's shims in `adt-plugin-api`) is the only place
//! that calls across the C ABI. Built-in plugins are registered from their statically linked
//! headers and go through exactly the same table and checks as dynamically loaded ones.
//! **Architecture Invariant:** a loaded library is never unloaded (its code may be referenced
//! by function pointers and by buffers' release callbacks for the life of the process).

pub mod conformance;
mod loader;
mod model;
mod samplers;

use std::fmt;
use std::path::PathBuf;

pub use loader::{
    PluginInfo, PluginSource, Registry, check_library, exports_entry_point, search_path,
};
pub use model::{Cond, Denoise, Model};
pub use samplers::Samplers;

/// Errors at the plugin boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be loaded as a dynamic library or has no plugin entry point.
    #[error("{path} is not an adt-bench plugin: {reason}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin was built against an incompatible ABI.
    #[error(
        "{path}: plugin ABI {found_major}.{found_minor} is incompatible with this adt-bench (ABI {host_major}.{host_minor}); rebuild the plugin against adt-plugin-api {host_major}.x"
    )]
    IncompatibleAbi {
        /// The file.
        path: PathBuf,
        /// The plugin's major.
        found_major: u16,
        /// The plugin's minor.
        found_minor: u16,
        /// The host's major.
        host_major: u16,
        /// The host's minor.
        host_minor: u16,
    },
    /// A plugin call reported an error.
    #[error("plugin `{plugin}` failed in {call}: {message}")]
    Call {
        /// The plugin name.
        plugin: String,
        /// The call.
        call: &'static str,
        /// The plugin's message.
        message: String,
    },
    /// A plugin call panicked (the panic was contained inside the plugin).
    #[error("plugin `{plugin}` panicked in {call}: {message}")]
    Panicked {
        /// The plugin name.
        plugin: String,
        /// The call.
        call: &'static str,
        /// The panic message.
        message: String,
    },
    /// A plugin returned data the host could not read.
    #[error("plugin `{plugin}` returned malformed {what}: {reason}")]
    Malformed {
        /// The plugin name.
        plugin: String,
        /// What was malformed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No plugin of that name and kind.
    #[error("no {kind} plugin named `{name}` (available: {available})")]
    NotFound {
        /// `model` or `sampler`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// What there is.
        available: String,
    },
    /// Bad input from the host side (shape mismatch and the like).
    #[error("{0}")]
    Input(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// The kind of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A model.
    Model,
    /// A sampler family.
    Sampler,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Model => "model",
            Kind::Sampler => "sampler",
        })
    }
}

/// Turn a status code and error buffer into a `Result`.
pub(crate) fn check_status(
    plugin: &str,
    call: &'static str,
    status: i32,
    err: adt_plugin_api::abi::AdtBuf,
) -> Result<()> {
    use adt_plugin_api::abi::Status;
    if status == Status::Ok as i32 {
        // SAFETY: an untouched EMPTY buffer or one the plugin filled; release is a no-op or correct.
        unsafe { adt_plugin_api::buf::release(err) };
        return Ok(());
    }
    // SAFETY: on failure the plugin filled `err` (or left it EMPTY).
    let message = unsafe { adt_plugin_api::buf::take_string(err) };
    let plugin = plugin.to_string();
    if status == Status::Panic as i32 {
        Err(Error::Panicked {
            plugin,
            call,
            message,
        })
    } else {
        Err(Error::Call {
            plugin,
            call,
            message,
        })
    }
}
