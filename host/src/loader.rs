//! Finding and loading plugins: by explicit path, or by name in the plugin directories
//! (`ACCEL_PLUGIN_PATH`, then the directory of the running executable).
//!
//! Each file is loaded with abi_stable's `lib_header_from_path`. Its ABI version must have this
//! host's major version; its root module's layout is then checked in the direction the versions
//! call for (see [`accel_api::abi`]): a newer plugin may have more trailing methods and fields
//! than this host knows, an older one fewer, and everything else must match. Several plugins load
//! side by side in one process.

use std::path::{Path, PathBuf};

use abi_stable::{
    abi_stability::abi_checking::{check_layout_compatibility, AbiInstabilityErrors},
    library::{lib_header_from_path, LibHeader, LibraryError},
    sabi_types::VersionNumber,
    type_layout::{TLFieldOrFunction, TypeLayout},
    StableAbi,
};
use accel_api::{
    abi::{PluginRef, ABI_VERSION},
    client::Accelerator,
    logging, AccelError, ErrorKind, ProbeInfo, Result,
};

/// The environment variable holding extra plugin directories, separated by `:`.
pub const PLUGIN_PATH_ENV: &str = "ACCEL_PLUGIN_PATH";

/// Set to see abi_stable's whole layout comparison when a plugin's layout is refused.
pub const DEBUG_LAYOUT_ENV: &str = "ACCEL_DEBUG_LAYOUT";

/// A loaded plugin.
#[derive(Clone, Copy)]
pub struct Plugin {
    root: PluginRef,
    version: VersionNumber,
}

impl Plugin {
    /// The accel ABI version the plugin was built for.
    pub fn abi_version(&self) -> VersionNumber {
        self.version
    }

    /// The backend's name (`kvm`, `hvf`, …).
    pub fn name(&self) -> String {
        (self.root.name())().to_string()
    }

    /// Whether the backend can run here, and why not.
    pub fn probe(&self) -> ProbeInfo {
        ProbeInfo::from(&(self.root.probe())())
    }

    /// Opens the accelerator.
    pub fn open(&self) -> Result<Accelerator> {
        (self.root.open())().into_result().map(Accelerator::from_abi)
    }
}

fn load_error(path: &Path, message: impl std::fmt::Display) -> AccelError {
    AccelError::new(ErrorKind::PLUGIN_LOAD, format!("{}: {message}", path.display()))
}

/// The first line of an error's text, trimmed: abi_stable's messages span several lines.
fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
}

fn describe(path: &Path, e: LibraryError) -> AccelError {
    match e {
        LibraryError::OpenError { err, .. } => {
            load_error(path, format_args!("not a loadable shared library ({})", first_line(&err.to_string())))
        }
        LibraryError::GetSymbolError { .. } => {
            load_error(path, "not an accel plugin: it exports no abi_stable root module")
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => load_error(
            path,
            format_args!(
                "built for accel ABI {actual_version}, but this host needs ABI {}.x; rebuild the plugin \
                 against accel-api {expected_version}",
                expected_version.major
            ),
        ),
        other => load_error(path, first_line(&other.to_string())),
    }
}

/// Under two layouts of one type whose sizes differ, the innermost type whose size differs while
/// none of the types it is made of does: the fixed struct that changed, where abi_stable stops at
/// a wrapper that differs only because of it (`RResult<CoreRegs, AccelError>` when `CoreRegs`
/// grew a field). Components are paired by position and name.
fn changed_type(
    expected: &'static TypeLayout,
    found: &'static TypeLayout,
    depth: u32,
) -> Option<(&'static TypeLayout, &'static TypeLayout)> {
    if expected.size() == found.size() || depth > 16 {
        return None;
    }
    let parts = expected.shared_vars().type_layouts().iter().zip(found.shared_vars().type_layouts());
    parts
        .map(|(e, f)| (e(), f()))
        .filter(|(e, f)| e.name() == f.name())
        .find_map(|(e, f)| changed_type(e, f, depth + 1))
        .or(Some((expected, found)))
}

/// Where a layout check failed: the innermost type on the path to the difference, and the path.
/// `expected_is_host` says which side abi_stable's "expected" is.
fn first_difference(errors: &AbiInstabilityErrors, expected_is_host: bool) -> String {
    let Some(error) = errors.errors.iter().find(|e| !e.errs.is_empty()) else {
        return "no detail".into();
    };
    let path: Vec<&str> = error
        .stack_trace
        .iter()
        .map(|step| match &step.found {
            TLFieldOrFunction::Field(f) => f.name(),
            TLFieldOrFunction::Function(f) => f.name.as_str(),
        })
        .collect();
    let ty = match error.stack_trace.last().map(|s| &s.expected) {
        Some(TLFieldOrFunction::Field(f)) => f.layout().full_type().to_string(),
        Some(TLFieldOrFunction::Function(f)) => format!("fn {}", f.name),
        None => errors.interface.full_type().to_string(),
    };
    let what: Vec<String> = error.errs.iter().map(|e| format!("{e:?}")).collect();
    let at = if path.is_empty() { String::new() } else { format!(" at {}", path.join(".")) };
    let changed = match error.stack_trace.last().map(|s| (&s.expected, &s.found)) {
        Some((TLFieldOrFunction::Field(e), TLFieldOrFunction::Field(f))) => {
            changed_type(e.layout(), f.layout(), 0)
        }
        _ => None,
    };
    match changed {
        Some((e, f)) if e.name() != ty.split('<').next().unwrap_or_default() => {
            let (host, plugin) = if expected_is_host { (e, f) } else { (f, e) };
            format!(
                "`{}` is {} bytes in the plugin and {} in this host, a change no 2.x release may make (in `{ty}`{at}: {})",
                host.full_type(),
                plugin.size(),
                host.size(),
                what.join("; ")
            )
        }
        _ => format!("in `{ty}`{at}: {}", what.join("; ")),
    }
}

/// Checks the plugin's root module layout against this host's, in the direction the versions
/// call for; the same version must match both ways.
fn check_layout(path: &Path, header: &LibHeader, plugin_version: VersionNumber) -> Result<()> {
    let host: &'static TypeLayout = <PluginRef as StableAbi>::LAYOUT;
    let plugin = header.layout().ok_or_else(|| {
        load_error(path, "it exports no layout of its root module, so it cannot be checked")
    })?;
    let host_version = VersionNumber::new(<PluginRef as abi_stable::library::RootModule>::VERSION_STRINGS)
        .map_err(|e| AccelError::bad_state(format!("this host's ABI version does not parse: {e}")))?;
    let (newer, older) =
        (plugin_version.minor > host_version.minor, plugin_version.minor < host_version.minor);
    let mut checks = Vec::new();
    if !older {
        // The plugin may have more trailing methods and fields than this host knows.
        checks.push((check_layout_compatibility(host, plugin), true));
    }
    if !newer {
        // The plugin may have fewer: those calls report `unsupported`.
        checks.push((check_layout_compatibility(plugin, host), false));
    }
    match checks.into_iter().find_map(|(c, expected_is_host)| c.err().map(|e| (e, expected_is_host))) {
        None => Ok(()),
        Some((errors, _)) if std::env::var_os(DEBUG_LAYOUT_ENV).is_some() => Err(load_error(
            path,
            format_args!("its root module's layout is incompatible with this host:\n{errors}"),
        )),
        Some((errors, expected_is_host)) => Err(load_error(
            path,
            format_args!(
                "its root module's layout is incompatible with this host (plugin ABI {plugin_version}, host \
                 accel-api {ABI_VERSION}): {}; set {DEBUG_LAYOUT_ENV}=1 for abi_stable's full comparison",
                first_difference(&errors, expected_is_host)
            ),
        )),
    }
}

/// Loads the plugin at `path`, checks its ABI, and routes its logs to this process's logger.
pub fn load(path: &Path) -> Result<Plugin> {
    if !path.exists() {
        return Err(AccelError::new(
            ErrorKind::NOT_FOUND,
            format!("{}: no such plugin file", path.display()),
        ));
    }
    let header = lib_header_from_path(path).map_err(|e| describe(path, e))?;
    let version = VersionNumber::new(header.version_strings())
        .map_err(|e| load_error(path, format_args!("its ABI version does not parse: {e}")))?;
    let expected = VersionNumber::new(<PluginRef as abi_stable::library::RootModule>::VERSION_STRINGS)
        .map_err(|e| AccelError::bad_state(format!("this host's ABI version does not parse: {e}")))?;
    if version.major != expected.major {
        return Err(describe(
            path,
            LibraryError::IncompatibleVersionNumber {
                library_name: "accel plugin",
                expected_version: expected,
                actual_version: version,
            },
        ));
    }
    check_layout(path, header, version)?;
    // SAFETY: `check_layout` compared the plugin's root module layout with this host's: they are
    // equal but for trailing prefix fields, which the prefix-type accessors check at each use.
    let root = unsafe { header.init_root_module_with_unchecked_layout::<PluginRef>() }
        .map_err(|e| describe(path, e))?;
    (root.set_logger())(logging::host_sink());
    Ok(Plugin { root, version })
}

/// The plugin directories, in search order.
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(PLUGIN_PATH_ENV)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.push(dir);
    }
    dirs
}

/// The file name a plugin called `name` has on this OS.
pub fn plugin_file_name(name: &str) -> String {
    format!("{}accel_{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// Every plugin file in the plugin directories (`libaccel_*.so` and the like), in search order.
pub fn discover() -> Vec<PathBuf> {
    let prefix = format!("{}accel_", std::env::consts::DLL_PREFIX);
    let mut found = Vec::new();
    for dir in plugin_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(std::env::consts::DLL_SUFFIX))
            })
            .collect();
        files.sort();
        for file in files {
            let same = |f: &PathBuf| {
                f == &file || std::fs::canonicalize(f).ok() == std::fs::canonicalize(&file).ok()
            };
            if !found.iter().any(same) {
                found.push(file);
            }
        }
    }
    found
}

/// Finds the plugin file `--accel` names: a path when it contains a path separator or ends with
/// the shared-library suffix, otherwise a backend name looked up in the plugin directories. The
/// file is not loaded.
pub fn find(spec: &str) -> Result<PathBuf> {
    if spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(std::env::consts::DLL_SUFFIX) {
        let path = PathBuf::from(spec);
        if !path.exists() {
            return Err(AccelError::new(
                ErrorKind::NOT_FOUND,
                format!("{}: no such plugin file", path.display()),
            ));
        }
        return Ok(path);
    }
    let file = plugin_file_name(spec);
    let dirs = plugin_dirs();
    if let Some(path) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
        return Ok(path);
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(AccelError::new(
        ErrorKind::NOT_FOUND,
        format!(
            "no plugin named '{spec}' ({file}) in {}; set {PLUGIN_PATH_ENV} or pass a path",
            searched.join(", ")
        ),
    ))
}

/// Finds and loads the plugin `--accel` names (see [`find`]).
pub fn resolve(spec: &str) -> Result<(PathBuf, Plugin)> {
    let path = find(spec)?;
    load(&path).map(|p| (path, p))
}

#[cfg(test)]
mod tests {
    use abi_stable::{std_types::RResult, StableAbi};

    use super::changed_type;

    mod before {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct Regs {
            pub x: [u64; 4],
            pub pc: u64,
        }
    }

    mod after {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct Regs {
            pub x: [u64; 4],
            pub pc: u64,
            pub tpidr: u64,
        }
    }

    #[test]
    fn a_grown_struct_is_found_under_the_wrapper_abi_stable_stops_at() {
        let old = <RResult<before::Regs, u32> as StableAbi>::LAYOUT;
        let new = <RResult<after::Regs, u32> as StableAbi>::LAYOUT;
        let (e, f) = changed_type(old, new, 0).expect("the sizes differ");
        assert_eq!((e.name(), e.size(), f.size()), ("Regs", 40, 48));
        assert!(changed_type(old, old, 0).is_none());
    }
}
