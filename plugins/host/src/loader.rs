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
    // Read the file as data first: a file that is not a shared library exporting the entry
    // point is refused before the loader maps it and runs any of its initialisers.
    let file = std::fs::File::open(path).map_err(|e| not(format!("cannot read it: {e}")))?;
    exports_entry_point(&object::ReadCache::new(file)).map_err(not)?;
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

/// Check object-file bytes, without loading them, for what a plugin library must be: a shared
/// library (ELF, Mach-O or PE) that exports `adt_plugin_header`. Every offset and count comes
/// from the file and is checked by the reader against its size; `data` may be a file read
/// on demand ([`object::ReadCache`]) or bytes in memory (the fuzzer).
pub fn exports_entry_point<'a, R: object::ReadRef<'a>>(data: R) -> std::result::Result<(), String> {
    use object::{Object, ObjectKind};
    let obj = object::File::parse(data)
        .map_err(|e| format!("not a shared library (ELF, Mach-O or PE): {e}"))?;
    if obj.kind() != ObjectKind::Dynamic {
        return Err(format!(
            "a {:?} object file, not a shared library",
            obj.kind()
        ));
    }
    let exports = obj
        .exports()
        .map_err(|e| format!("its export table cannot be read: {e}"))?;
    let want = HEADER_SYMBOL.as_bytes();
    // Mach-O prefixes C symbols with `_`.
    let found = exports
        .iter()
        .any(|e| e.name() == want || e.name().strip_prefix(b"_") == Some(want));
    if found {
        Ok(())
    } else {
        Err(format!("it exports no `{HEADER_SYMBOL}` symbol"))
    }
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

/// A library found on the search path, opened the first time it is needed.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    /// When it was opened (a sequence number of the registry) and what came of it.
    opened: std::cell::OnceCell<(u64, std::result::Result<PluginInfo, String>)>,
}

impl Candidate {
    fn open(&self, clock: &std::cell::Cell<u64>) -> std::result::Result<&PluginInfo, &str> {
        self.opened
            .get_or_init(|| {
                let seq = clock.get();
                clock.set(seq + 1);
                let r = check_library(&self.path).map_err(|e| {
                    tracing::warn!(path = %self.path.display(), error = %e, "refused plugin library");
                    e.to_string()
                });
                (seq, r)
            })
            .1
            .as_ref()
            .map_err(String::as_str)
    }

    /// The plugin, when the library was opened and accepted, with when.
    fn info(&self) -> Option<(u64, &PluginInfo)> {
        self.opened
            .get()
            .and_then(|(seq, r)| r.as_ref().ok().map(|i| (*seq, i)))
    }

    /// Whether the file is named after plugin `name` (`libadt_plugin_NAME.so`, with every
    /// character of the name that cannot be in a crate name as `_`).
    fn named(&self, name: &str) -> bool {
        let stem = self.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let stem = stem.strip_prefix("lib").unwrap_or(stem);
        let Some(stem) = stem.strip_prefix("adt_plugin_") else {
            return false;
        };
        let want: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        stem.eq_ignore_ascii_case(&want)
    }
}

/// The plugins this process can use: built-ins first, then the libraries found on the search
/// path. Finding the libraries only lists folders; a library is opened (its initialisers run)
/// the first time a command needs it: a model by name opens the library named after it
/// (`libadt_plugin_NAME.so`) first and others only when that one does not hold it, a
/// sampler lookup opens libraries in search-path order until one offers the sampler, and only
/// a listing ([`Registry::plugins`]) opens them all. When two libraries hold a plugin of the
/// same name and kind, the first one opened wins.
#[derive(Debug, Default)]
pub struct Registry {
    builtins: Vec<PluginInfo>,
    candidates: Vec<Candidate>,
    clock: std::cell::Cell<u64>,
}

impl Registry {
    /// A registry with the given built-ins.
    pub fn with_builtins(builtins: &[fn() -> &'static PluginHeader]) -> Result<Registry> {
        let mut r = Registry::default();
        for b in builtins {
            r.builtins.push(builtin(*b)?);
        }
        Ok(r)
    }

    /// Add the plugin libraries of directories (or explicit library files) without opening
    /// them. Libraries whose file name does not start with `adt_plugin_` / `libadt_plugin_`
    /// are ignored in directories, so the executable's folder can hold other libraries.
    pub fn scan(&mut self, paths: &[PathBuf]) {
        for p in paths {
            let found: Vec<PathBuf> = if p.is_file() {
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
            for path in found {
                if !self.candidates.iter().any(|c| c.path == path) {
                    self.candidates.push(Candidate {
                        path,
                        opened: std::cell::OnceCell::new(),
                    });
                }
            }
        }
    }

    /// Register one library explicitly, opening it now (errors are returned, not recorded);
    /// it takes the place of a plugin of the same name and kind.
    pub fn add_library(&mut self, path: &Path) -> Result<&PluginInfo> {
        let info = check_library(path)?;
        self.builtins
            .retain(|i| !(i.name == info.name && i.kind == info.kind));
        self.builtins.insert(0, info);
        Ok(&self.builtins[0])
    }

    /// Whether the plugin of candidate `index` is shadowed by one of the same name and kind
    /// that was there first (a built-in, or a library opened before it).
    fn shadowed(&self, index: usize) -> bool {
        let Some((seq, info)) = self.candidates[index].info() else {
            return false;
        };
        let same = |i: &PluginInfo| i.name == info.name && i.kind == info.kind;
        self.builtins.iter().any(same)
            || self
                .candidates
                .iter()
                .filter_map(Candidate::info)
                .any(|(s, i)| s < seq && same(i))
    }

    /// Every plugin, opening every library on the search path (for listings).
    pub fn plugins(&self) -> Vec<&PluginInfo> {
        let mut out: Vec<&PluginInfo> = self.builtins.iter().collect();
        for (i, c) in self.candidates.iter().enumerate() {
            if let Ok(info) = c.open(&self.clock)
                && !self.shadowed(i)
            {
                out.push(info);
            }
        }
        out
    }

    /// The plugins opened so far (built-ins and the libraries a command has needed), for
    /// manifests: what went into a result, not what happened to be installed.
    pub fn loaded(&self) -> Vec<&PluginInfo> {
        let mut out: Vec<&PluginInfo> = self.builtins.iter().collect();
        for (i, c) in self.candidates.iter().enumerate() {
            if let Some((_, info)) = c.info()
                && !self.shadowed(i)
            {
                out.push(info);
            }
        }
        out
    }

    /// The plugins of `kind`, opening libraries in search-path order only as the iteration
    /// reaches them (stop early to leave the rest unopened).
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &PluginInfo> {
        let libs = self
            .candidates
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| {
                c.open(&self.clock)
                    .ok()
                    .filter(|info| info.kind == kind && !self.shadowed(i))
            });
        self.builtins
            .iter()
            .filter(move |p| p.kind == kind)
            .chain(libs)
    }

    /// Libraries that were opened and refused, with why.
    pub fn rejected(&self) -> Vec<(PathBuf, String)> {
        self.candidates
            .iter()
            .filter_map(|c| match c.opened.get() {
                Some((_, Err(e))) => Some((c.path.clone(), e.clone())),
                _ => None,
            })
            .collect()
    }

    /// A plugin by kind and name: a built-in or a library opened before, else the libraries
    /// named after it, else the others in search-path order.
    pub fn find(&self, kind: Kind, name: &str) -> Result<&PluginInfo> {
        let hit = |p: &&PluginInfo| p.kind == kind && p.name == name;
        if let Some(p) = self.loaded().into_iter().find(hit) {
            return Ok(p);
        }
        let named = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.named(name));
        let others = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.named(name));
        for (i, c) in named.chain(others) {
            if let Ok(info) = c.open(&self.clock)
                && hit(&info)
                && !self.shadowed(i)
            {
                return Ok(info);
            }
        }
        Err(Error::NotFound {
            kind: if kind == Kind::Model {
                "model"
            } else {
                "sampler"
            },
            name: name.to_string(),
            available: self
                .plugins()
                .into_iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}
