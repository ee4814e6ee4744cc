//! Finding and loading plugins: by explicit path, or by name in the plugin directories
//! (`ACCEL_PLUGIN_PATH`, then the directory of the running executable).
//!
//! Each file is opened once and checked before any of its code runs (see [`crate::plugin_file`] and
//! [`trust`]), then loaded through its open descriptor with libloading, and its abi_stable header
//! read. Its ABI version must have this
//! host's major version; its root module's layout is then checked in the direction the versions
//! call for (see [`accel_api::abi`]): a newer plugin may have more trailing methods and fields
//! than this host knows, an older one fewer, and everything else must match. Several plugins load
//! side by side in one process.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use abi_stable::{
    abi_stability::abi_checking::{check_layout_compatibility, AbiInstabilityErrors},
    library::{AbiHeaderRef, LibHeader, LibraryError},
    sabi_types::VersionNumber,
    type_layout::{TLFieldOrFunction, TypeLayout},
    StableAbi,
};
use accel_api::{
    abi::{PluginRef, ABI_VERSION},
    client::Accelerator,
    logging, AccelError, ErrorKind, ProbeInfo, Result,
};

use crate::{
    plugin_file::{OpenError, PluginFile},
    trust,
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

/// Loads the plugin at `path` under the default (strict) trust policy; see [`load_with`].
pub fn load(path: &Path) -> Result<Plugin> {
    load_with(path, trust::Policy::default())
}

/// How far up the directories above `path` are checked: a file directly in a plugin directory
/// is checked up to that directory, any other path from `/` down.
fn trust_scope(path: &Path) -> trust::Scope {
    let dirs = plugin_dirs().unwrap_or_default();
    match path.parent() {
        Some(parent) if dirs.iter().any(|d| d == parent) => trust::Scope::PluginDir(parent.to_path_buf()),
        _ => trust::Scope::WholePath,
    }
}

/// Opens the plugin file at `path` and checks it, all before any of its code runs: a regular
/// file, not a symbolic link, trusted under `policy` (see [`trust`]), and an ELF shared object
/// for this machine exporting abi_stable's root module (see [`crate::plugin_file`]).
pub fn open_checked(path: &Path, policy: trust::Policy) -> Result<PluginFile> {
    let mut file = match PluginFile::open(path, policy.allow_untrusted) {
        Ok(file) => file,
        Err(OpenError::NotFound) => {
            return Err(AccelError::new(
                ErrorKind::NOT_FOUND,
                format!("{}: no such plugin file", path.display()),
            ))
        }
        Err(OpenError::Symlink) => {
            return Err(AccelError::new(ErrorKind::PLUGIN_LOAD, trust::symlink_refusal(path)))
        }
        Err(OpenError::Other(why)) => return Err(load_error(path, why)),
    };
    trust::check(path, &file.meta, &trust_scope(path), policy)
        .map_err(|why| AccelError::new(ErrorKind::PLUGIN_LOAD, why))?;
    file.check().map_err(|why| load_error(path, why))?;
    Ok(file)
}

/// Loads the checked file with the dynamic loader through its open descriptor, and returns its
/// abi_stable header. The library, and the descriptor it was loaded by, stay for the life of the
/// process, as abi_stable's own loading keeps the library: its root module is `'static`.
fn open_library(path: &Path, file: PluginFile) -> Result<&'static LibHeader> {
    let load_path = file.load_path();
    let shown = |text: String| text.replace(&*load_path.to_string_lossy(), &path.display().to_string());
    // SAFETY: the file was checked to be an ELF shared object for this machine that exports
    // abi_stable's root module; loading it runs its initializers, as loading any plugin must.
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(&load_path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| {
        load_error(
            path,
            format_args!("not a loadable shared library ({})", shown(first_line(&e.to_string()))),
        )
    })?;
    file.keep_open();
    // SAFETY: abi_stable exports its root module loader under this name as an `AbiHeaderRef`,
    // a `'static` reference, valid while the library stays loaded, which it does: it is never
    // unloaded (see below).
    let header = unsafe {
        library.get::<AbiHeaderRef>(abi_stable::library::ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes())
    }
    .map(|symbol| *symbol)
    .map_err(|_| load_error(path, "not an accel plugin: it exports no abi_stable root module"));
    // The library is never unloaded: the `'static` references into it live as long as the
    // process, and so must it.
    std::mem::forget(library);
    header?.upgrade().map_err(|e| describe(path, e))
}

/// Opens and checks the plugin at `path` (see [`open_checked`]), loads it, checks its ABI, and
/// routes its logs to this process's logger.
pub fn load_with(path: &Path, policy: trust::Policy) -> Result<Plugin> {
    let file = open_checked(path, policy)?;
    let header = open_library(path, file)?;
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

/// Checks that the plugin loaded from `path` for `--accel NAME` calls itself `name`.
pub fn check_name(plugin: &Plugin, path: &Path, name: &str) -> Result<()> {
    let own = plugin.name();
    if own == name {
        return Ok(());
    }
    Err(load_error(
        path,
        format_args!("asked for backend '{name}', but this plugin calls itself '{own}'; refusing to use it as '{name}'"),
    ))
}

/// Whether `spec` (an `--accel` value) is a plugin file path rather than a backend name: it
/// contains a path separator or ends with the shared-library suffix.
pub fn is_path(spec: impl AsRef<OsStr>) -> bool {
    let bytes = spec.as_ref().as_bytes();
    bytes.contains(&(std::path::MAIN_SEPARATOR as u8))
        || bytes.ends_with(std::env::consts::DLL_SUFFIX.as_bytes())
}

/// The plugin directories, in search order: `ACCEL_PLUGIN_PATH`'s entries, which must be
/// absolute (ignored when the process runs setuid or setgid), then the directory of the running
/// executable.
pub fn plugin_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    match std::env::var_os(PLUGIN_PATH_ENV) {
        Some(_) if trust::secure_execution() => {
            log::debug!("{PLUGIN_PATH_ENV} is ignored: accel-host runs setuid or setgid");
        }
        Some(value) => {
            for dir in std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()) {
                if dir.is_relative() {
                    return Err(AccelError::new(
                        ErrorKind::INVALID_ARGUMENT,
                        format!(
                            "{PLUGIN_PATH_ENV} entry '{}' is a relative path; plugin directories must be absolute",
                            dir.display()
                        ),
                    ));
                }
                dirs.push(dir);
            }
        }
        None => {}
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.push(dir);
    }
    Ok(dirs)
}

/// The file name a plugin called `name` has on this OS.
pub fn plugin_file_name(name: &str) -> String {
    format!("{}accel_{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// Every plugin file in the plugin directories (`libaccel_*.so` and the like, symbolic links
/// included so that loading them refuses them in words), in search order.
pub fn discover() -> Result<Vec<PathBuf>> {
    let prefix = format!("{}accel_", std::env::consts::DLL_PREFIX);
    let mut found = Vec::new();
    for dir in plugin_dirs()? {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                (p.is_file() || p.is_symlink())
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
    Ok(found)
}

/// Finds the plugin file `--accel` names: a path when [`is_path`], otherwise a backend name
/// looked up in the plugin directories. A path without a separator is in the current directory:
/// the dynamic loader's own search is never used. The file is not loaded.
pub fn find(spec: impl AsRef<OsStr>) -> Result<PathBuf> {
    let spec = spec.as_ref();
    if is_path(spec) {
        let path = PathBuf::from(spec);
        if path.symlink_metadata().is_err() {
            return Err(AccelError::new(
                ErrorKind::NOT_FOUND,
                format!("{}: no such plugin file", path.display()),
            ));
        }
        return Ok(path);
    }
    let Some(spec) = spec.to_str() else {
        return Err(AccelError::invalid(format!(
            "'{}' is neither a backend name nor a plugin file path",
            Path::new(spec).display()
        )));
    };
    let file = plugin_file_name(spec);
    let dirs = plugin_dirs()?;
    if let Some(path) = dirs.iter().map(|d| d.join(&file)).find(|p| p.symlink_metadata().is_ok()) {
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

/// Finds and loads the plugin `--accel` names (see [`find`]) under `policy`; a plugin found by
/// name must call itself by that name.
pub fn resolve_with(spec: &str, policy: trust::Policy) -> Result<(PathBuf, Plugin)> {
    let path = find(spec)?;
    let plugin = load_with(&path, policy)?;
    if !is_path(spec) {
        check_name(&plugin, &path, spec)?;
    }
    Ok((path, plugin))
}

/// [`resolve_with`] under the default (strict) trust policy.
pub fn resolve(spec: &str) -> Result<(PathBuf, Plugin)> {
    resolve_with(spec, trust::Policy::default())
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
