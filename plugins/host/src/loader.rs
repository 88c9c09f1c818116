//! Discovery and loading: the search path, the ABI handshake, the registry.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use adt_plugin_api::abi::{
    ABI_MAJOR, ABI_MINOR, HEADER_SYMBOL, HeaderFn, MAGIC, ModelApiV1, PluginHeader, PluginKind,
    SamplerApiV1,
};

use crate::{Error, Kind, Result};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginSource {
    /// Linked into the adt-bench binary.
    Builtin,
    /// Loaded from a dynamic library.
    Library(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin => f.write_str("built-in"),
            PluginSource::Library(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin whose header passed the checks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: Kind,
    /// ABI as `major.minor`.
    pub abi: String,
    /// Build features (e.g. `cpu`, `cuda`).
    pub features: Vec<String>,
    /// Where it came from.
    pub source: PluginSource,
    #[serde(skip)]
    pub(crate) header: &'static PluginHeader,
}

impl PluginInfo {
    pub(crate) fn model_api(&self) -> Option<&'static ModelApiV1> {
        if self.kind != Kind::Model {
            return None;
        }
        // SAFETY: the header was validated: kind Model ⇒ `api` points to a static ModelApiV1.
        let api = unsafe { &*(self.header.api as *const ModelApiV1) };
        Some(api)
    }

    pub(crate) fn sampler_api(&self) -> Option<&'static SamplerApiV1> {
        if self.kind != Kind::Sampler {
            return None;
        }
        // SAFETY: the header was validated: kind Sampler ⇒ `api` points to a static SamplerApiV1.
        let api = unsafe { &*(self.header.api as *const SamplerApiV1) };
        Some(api)
    }
}

/// Validate a header (built-in or loaded). `path` names it in errors.
///
/// # Safety
/// `header` must point to a readable object at least as large as the four fixed fields; the
/// rest is read only after the magic, major version and size check out.
unsafe fn validate(
    header: *const PluginHeader,
    path: &Path,
    source: PluginSource,
) -> Result<PluginInfo> {
    let not = |reason: &str| Error::NotAPlugin {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if header.is_null() {
        return Err(not("its entry point returned null"));
    }
    // Read the fixed prefix field by field (these four fields never move).
    // SAFETY: the caller guarantees the prefix is readable.
    let (magic, major, minor, size) = unsafe {
        (
            std::ptr::addr_of!((*header).magic).read_unaligned(),
            std::ptr::addr_of!((*header).abi_major).read_unaligned(),
            std::ptr::addr_of!((*header).abi_minor).read_unaligned(),
            std::ptr::addr_of!((*header).header_size).read_unaligned(),
        )
    };
    if magic != MAGIC {
        return Err(not("bad magic in its header"));
    }
    if major != ABI_MAJOR {
        return Err(Error::IncompatibleAbi {
            path: path.to_path_buf(),
            found_major: major,
            found_minor: minor,
            host_major: ABI_MAJOR,
            host_minor: ABI_MINOR,
        });
    }
    if (size as usize) < std::mem::size_of::<PluginHeader>() {
        return Err(not("its header is truncated"));
    }
    // SAFETY: magic, major and size check out, so this is a v1 header of full size.
    let h: &'static PluginHeader = unsafe { &*header };
    let cstr = |p: *const std::ffi::c_char, what: &str| -> Result<String> {
        if p.is_null() {
            return Err(not(&format!("null {what}")));
        }
        // SAFETY: v1 headers carry NUL-terminated static strings.
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let name = cstr(h.name, "name")?;
    let version = cstr(h.version, "version")?;
    let features: Vec<String> =
        serde_json::from_str(&cstr(h.features, "features")?).unwrap_or_default();
    let kind = match h.kind {
        k if k == PluginKind::Model as u32 => Kind::Model,
        k if k == PluginKind::Sampler as u32 => Kind::Sampler,
        other => return Err(not(&format!("unknown plugin kind {other}"))),
    };
    if h.api.is_null() {
        return Err(not("null function table"));
    }
    let info = PluginInfo {
        name,
        version,
        kind,
        abi: format!("{major}.{minor}"),
        features,
        source,
        header: h,
    };
    // The table must be at least as large as this host expects for the plugin's minor.
    let table_size = match kind {
        // SAFETY: `api` is non-null; the first field of every table is its size.
        Kind::Model => unsafe { (*(h.api as *const ModelApiV1)).size },
        // SAFETY: as above.
        Kind::Sampler => unsafe { (*(h.api as *const SamplerApiV1)).size },
    };
    let needed = match kind {
        Kind::Model => std::mem::size_of::<ModelApiV1>(),
        Kind::Sampler => std::mem::size_of::<SamplerApiV1>(),
    };
    if table_size < needed {
        return Err(not(&format!(
            "function table is {table_size} bytes, ABI {ABI_MAJOR}.{ABI_MINOR} needs {needed}"
        )));
    }
    Ok(info)
}

/// Register a statically linked plugin from its header function.
pub fn builtin(header: fn() -> &'static PluginHeader) -> Result<PluginInfo> {
    let h = header();
    // SAFETY: a header produced by the SDK macros in this very binary.
    unsafe { validate(h, Path::new("<built-in>"), PluginSource::Builtin) }
}

/// Load a dynamic library and validate its header. The library is never unloaded.
pub fn check_library(path: &Path) -> Result<PluginInfo> {
    let not = |reason: String| Error::NotAPlugin {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(not("no such file".into()));
    }
    // SAFETY: loading a library runs its initialisers; this is the documented risk of plugins
    // and the reason the user names the path (or puts it on the plugin path) explicitly.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| not(format!("cannot load it as a library: {e}")))?;
    // SAFETY: the symbol, when present, has the documented HeaderFn signature.
    let entry: libloading::Symbol<'_, HeaderFn> = unsafe { lib.get(HEADER_SYMBOL.as_bytes()) }
        .map_err(|_| not(format!("it exports no `{HEADER_SYMBOL}` symbol")))?;
    // SAFETY: calling the plugin's entry point; it returns a pointer to its static header.
    let header = unsafe { entry() };
    // SAFETY: the pointer comes from the entry point; `validate` reads the fixed prefix first.
    let info = unsafe { validate(header, path, PluginSource::Library(path.to_path_buf())) };
    // Never unload: headers, tables and release callbacks point into the library.
    std::mem::forget(lib);
    info
}

/// The plugin search path, in order: `--plugin-path` entries, `ADT_PLUGIN_PATH` (separated
/// like `PATH`), then the folder of the running executable.
pub fn search_path(cli: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = cli.to_vec();
    if let Some(v) = std::env::var_os("ADT_PLUGIN_PATH") {
        out.extend(std::env::split_paths(&v));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        out.push(dir);
    }
    out
}

fn is_library(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(ext, "so" | "dylib" | "dll")
}

/// All plugins known to this process: built-ins first, then libraries found on the search path.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: Vec<PluginInfo>,
    /// Libraries on the search path that looked like plugins but were refused, with why.
    pub rejected: Vec<(PathBuf, String)>,
}

impl Registry {
    /// A registry with the given built-ins.
    pub fn with_builtins(builtins: &[fn() -> &'static PluginHeader]) -> Result<Registry> {
        let mut r = Registry::default();
        for b in builtins {
            r.plugins.push(builtin(*b)?);
        }
        Ok(r)
    }

    /// Scan directories (or explicit library files) for plugins. Libraries whose file name
    /// does not start with `adt_plugin_` / `libadt_plugin_` are ignored in directories, so the
    /// executable's folder can hold other libraries. Refused libraries are recorded in
    /// [`Registry::rejected`]; a plugin whose name is already registered is skipped (first wins).
    pub fn scan(&mut self, paths: &[PathBuf]) {
        for p in paths {
            let candidates: Vec<PathBuf> = if p.is_file() {
                vec![p.clone()]
            } else if let Ok(rd) = std::fs::read_dir(p) {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        let n = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        is_library(f)
                            && (n.starts_with("libadt_plugin_") || n.starts_with("adt_plugin_"))
                    })
                    .collect();
                v.sort();
                v
            } else {
                continue;
            };
            for c in candidates {
                if self
                    .plugins
                    .iter()
                    .any(|i| i.source == PluginSource::Library(c.clone()))
                {
                    continue;
                }
                match check_library(&c) {
                    Ok(info) => {
                        if self
                            .plugins
                            .iter()
                            .any(|i| i.name == info.name && i.kind == info.kind)
                        {
                            tracing::debug!(path = %c.display(), name = %info.name, "plugin shadowed by an earlier one");
                        } else {
                            self.plugins.push(info);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %c.display(), error = %e, "refused plugin library");
                        self.rejected.push((c, e.to_string()));
                    }
                }
            }
        }
    }

    /// Register one library explicitly (errors are returned, not recorded).
    pub fn add_library(&mut self, path: &Path) -> Result<&PluginInfo> {
        let info = check_library(path)?;
        self.plugins
            .retain(|i| !(i.name == info.name && i.kind == info.kind));
        self.plugins.push(info);
        Ok(self.plugins.last().expect("just pushed"))
    }

    /// Every plugin.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// A plugin by kind and name.
    pub fn find(&self, kind: Kind, name: &str) -> Result<&PluginInfo> {
        self.plugins
            .iter()
            .find(|p| p.kind == kind && p.name == name)
            .ok_or_else(|| Error::NotFound {
                kind: if kind == Kind::Model {
                    "model"
                } else {
                    "sampler"
                },
                name: name.to_string(),
                available: self
                    .plugins
                    .iter()
                    .filter(|p| p.kind == kind)
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
