//! Finding and loading plugins: by explicit path, or by name in the plugin directories
//! (`ACCEL_PLUGIN_PATH`, then the directory of the running executable).
//!
//! Each file is loaded with abi_stable's `lib_header_from_path` and `init_root_module`, which
//! check the ABI version and the layout of the root module; several plugins load side by side in
//! one process.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use accel_api::{abi::PluginRef, client::Accelerator, logging, AccelError, ErrorKind, ProbeInfo, Result};

/// The environment variable holding extra plugin directories, separated by `:`.
pub const PLUGIN_PATH_ENV: &str = "ACCEL_PLUGIN_PATH";

/// Set to see abi_stable's whole layout comparison when a plugin's layout is refused.
pub const DEBUG_LAYOUT_ENV: &str = "ACCEL_DEBUG_LAYOUT";

/// A loaded plugin.
#[derive(Clone, Copy)]
pub struct Plugin {
    root: PluginRef,
}

impl Plugin {
    /// The backend's name (`kvm`, `hvf`, …).
    pub fn name(&self) -> String {
        (self.root.name())().to_string()
    }

    /// Whether the backend can run here, and why not.
    pub fn probe(&self) -> ProbeInfo {
        (self.root.probe())()
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
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => load_error(
            path,
            format_args!(
                "built for accel ABI {actual_version}, but this host needs ABI {expected_version}; rebuild the plugin against accel-api {}",
                accel_api::abi::ABI_VERSION
            ),
        ),
        LibraryError::AbiInstability(err) if std::env::var_os(DEBUG_LAYOUT_ENV).is_some() => {
            load_error(path, format_args!("its root module's layout is incompatible with this host:\n{err}"))
        }
        LibraryError::AbiInstability(_) => load_error(
            path,
            format_args!(
                "its root module's layout is incompatible with this host's accel-api {}; \
                 set {DEBUG_LAYOUT_ENV}=1 for abi_stable's full comparison",
                accel_api::abi::ABI_VERSION
            ),
        ),
        other => load_error(path, first_line(&other.to_string())),
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
    let root = header.init_root_module::<PluginRef>().map_err(|e| describe(path, e))?;
    (root.set_logger())(logging::host_sink());
    Ok(Plugin { root })
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
            if !found.contains(&file) {
                found.push(file);
            }
        }
    }
    found
}

/// Resolves `--accel`: a path when it contains a path separator or ends with the shared-library
/// suffix, otherwise a backend name looked up in the plugin directories.
pub fn resolve(spec: &str) -> Result<(PathBuf, Plugin)> {
    if spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(std::env::consts::DLL_SUFFIX) {
        let path = PathBuf::from(spec);
        return load(&path).map(|p| (path, p));
    }
    let file = plugin_file_name(spec);
    let dirs = plugin_dirs();
    for dir in &dirs {
        let path = dir.join(&file);
        if path.is_file() {
            return load(&path).map(|p| (path, p));
        }
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
